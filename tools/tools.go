//go:build tools

// Package tools pins the CRI peer tools used by the end-to-end tests:
// crictl, critest and the ginkgo CLI (critest -parallel=N execs "ginkgo").
// It lives in its own module so that cri-tools' dependencies never enter
// the main cri-guard module.
package tools

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
	_ "sigs.k8s.io/cri-tools/cmd/critest"
)
