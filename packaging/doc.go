// Package packaging holds the description of cri-guard's Debian and RPM
// packages (nfpm.yaml, read by tools/package.sh, `make package`), their
// maintainer scripts (deb/, rpm/) and lintian overrides, and the test that
// checks the built packages: the .deb and the .rpm ship the same files, the
// config file is a conffile / %config(noreplace), the maintainer scripts
// are the ones in this directory, and the units name /usr/bin/cri-guard.
// It has no Go code to import. See the README's install section and
// docs/provisioning.md.
package packaging
