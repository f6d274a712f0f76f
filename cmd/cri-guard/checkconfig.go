package main

import (
	"fmt"

	"github.com/cri-guard/cri-guard/pkg/config"
)

// checkConfig validates a file offline, for provisioning pipelines.
func checkConfig(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("%w: cri-guard check-config FILE", errUsage)
	}
	f, err := config.Load(args[0])
	if err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	c, err := config.Resolve(f)
	if err != nil {
		return fmt.Errorf("%s:\n%w", args[0], err)
	}
	fmt.Printf("%s: ok (%s)\n", args[0], c.Digest)
	return nil
}
