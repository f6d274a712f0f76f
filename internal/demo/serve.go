package demo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Serve starts a scratch containerd and a cri-guard (default settings plus
// args) in front of it, prints how to reach it, and waits until ctx is done
// or cri-guard exits. Everything is removed on return.
func Serve(ctx context.Context, opts Options, args ...string) (retErr error) {
	d, err := start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, d.close()) }()
	g, err := d.guard(ctx, "run", args...)
	if err != nil {
		return err
	}
	crictl := filepath.Join(filepath.Dir(opts.Binary), "crictl")
	if abs, err := filepath.Abs(crictl); err == nil {
		crictl = abs
	}
	d.say("\ncri-guard listens on %s", g.Socket)
	d.say("Point a kubelet or crictl at it, for example:\n")
	d.say("  %s --runtime-endpoint %s --image-endpoint %s ps", crictl, g.Endpoint, g.Endpoint)
	if _, err := os.Stat(crictl); err != nil {
		d.say("\n(%s is built by `make tools`.)", crictl)
	}
	d.say("\nPod cgroups must be created below %s (containerd uses the cgroupfs driver).", d.rt.CgroupRoot)
	d.say("Press Ctrl-C to stop and clean up.")
	select {
	case <-ctx.Done():
		d.say("\nStopping.")
		return nil
	case <-g.Exited():
		return fmt.Errorf("demo: cri-guard exited:\n%s", g.Logs())
	}
}
