//go:build tools

// Package tools pins the CRI peer tools (crictl and critest) used by the
// end-to-end tests. It lives in its own module so that cri-tools'
// dependencies never enter the main cri-guard module.
package tools

import (
	_ "sigs.k8s.io/cri-tools/cmd/critest"
	_ "sigs.k8s.io/cri-tools/cmd/crictl"
)
