package main

import (
	"fmt"
	"runtime/debug"
)

// Set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

// criAPIVersion is the version of k8s.io/cri-api this binary was built with.
func criAPIVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range bi.Deps {
		if d.Path == "k8s.io/cri-api" {
			return d.Version
		}
	}
	return "unknown"
}

func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

func versionString() string {
	return fmt.Sprintf("cri-guard %s (commit %s, cri-api %s)", version, buildCommit(), criAPIVersion())
}
