// Package config reads cri-guard's YAML configuration file and validates it.
// Every key has a command-line flag of the same meaning (sandboxMinMemory is
// --sandbox-min-memory); a flag wins over the file.
//
// Validation errors name the key and the bad value. The package does not
// watch files or apply anything; cmd/cri-guard does.
package config
