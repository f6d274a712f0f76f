package main

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// reloadCmd is `cri-guard reload`, the unit's ExecReload: it asks the
// running daemon to apply its configuration file, or, if the binary was
// replaced since the daemon started, to hand over to the new binary, and
// waits for the answer. It fails (and so does `systemctl reload`) when the
// file is refused; the daemon then keeps the config it had.
func reloadCmd(_ context.Context, args []string) error {
	flags := newConfigFlags("reload")
	timeout := flags.fs.Duration("timeout", 3*time.Minute, "how long to wait for the daemon's answer")
	cfg, err := flags.parse(args)
	if err != nil {
		if errors.Is(err, errUsage) {
			return err
		}
		return fmt.Errorf("refused, the running daemon keeps its config: %w", err)
	}
	path, err := controlPath(cfg)
	if err != nil {
		return err
	}
	c, err := dialControl(path)
	if err != nil {
		return err
	}
	if c == nil {
		return fmt.Errorf("no daemon answers on %s (is cri-guard serving %s?)", path, cfg.Listen)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(*timeout))
	if err := send(c, ctlRequest{Op: "reload"}); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	var rep ctlReply
	files, err := receive(c, &rep)
	closeAll(files)
	if err != nil {
		return fmt.Errorf("no answer from the daemon on %s: %w", path, err)
	}
	switch {
	case !rep.OK:
		return fmt.Errorf("refused: %s", rep.Error)
	case rep.Upgraded != 0:
		fmt.Printf("upgraded: pid %d serves the new binary; pid %d drains and exits\n", rep.Upgraded, rep.PID)
	case rep.Changed:
		fmt.Printf("config reloaded: %s (pid %d)\n", rep.Digest, rep.PID)
	default:
		fmt.Printf("config unchanged: %s in force (pid %d)\n", rep.Digest, rep.PID)
	}
	return nil
}
