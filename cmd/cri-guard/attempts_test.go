package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cri-guard/cri-guard/pkg/attempts"
)

// controlAt serves a control server with store at a fresh socket and
// returns its path.
func controlAt(t *testing.T, store *attempts.Store) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "cg-ctl-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "g.sock.ctl")
	l, err := listenControl(path)
	if err != nil {
		t.Fatal(err)
	}
	cs := newControlServer(l, path, slog.New(slog.NewTextHandler(io.Discard, nil)), executable{}, nil)
	cs.attempts = store
	go cs.serve()
	t.Cleanup(func() { cs.close(); cs.wait(5 * time.Second) })
	return path
}

// Issue 16 item 11: `cri-guard explain` asks the running daemon, over the
// control socket, for a pod's RunPodSandbox calls that created no sandbox.
func TestControlAttempts(t *testing.T) {
	store := attempts.New(0, 0)
	store.Add(attempts.Attempt{Namespace: "team-a", Name: "tiny", UID: "u1", Attempt: 4, CgroupParent: "/kubepods/podu1",
		Outcome: attempts.Refused, Code: "InvalidArgument", Message: "pod team-a/tiny: memory limit 2000 bytes is below the 12Mi minimum"})
	path := controlAt(t, store)
	deadline := time.Now().Add(time.Minute) // a hang guard
	kept := fmt.Sprintf("the last %d pods, each for %s after its latest call, until the daemon restarts", attempts.DefaultMax, attempts.DefaultTTL)

	for name, tc := range map[string]struct {
		pod  string
		want string // uid/attempt/outcome/message of each
	}{
		"by name":      {pod: "team-a/tiny", want: "u1/4/refused/pod team-a/tiny: memory limit 2000 bytes is below the 12Mi minimum"},
		"by uid":       {pod: "u1", want: "u1/4/refused/pod team-a/tiny: memory limit 2000 bytes is below the 12Mi minimum"},
		"not seen":     {pod: "team-a/other", want: ""},
		"empty: none":  {pod: "", want: ""},
		"another name": {pod: "team-b/tiny", want: ""},
	} {
		t.Run(name, func(t *testing.T) {
			rep, err := askAttempts(path, tc.pod, deadline)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range rep.Attempts {
				got = append(got, fmt.Sprintf("%s/%d/%s/%s", a.UID, a.Attempt, a.Outcome, a.Message))
			}
			if strings.Join(got, " ") != tc.want || rep.PID != os.Getpid() || rep.Kept != kept {
				t.Errorf("got %q, pid %d, kept %q\nwant %q, pid %d, kept %q", got, rep.PID, rep.Kept, tc.want, os.Getpid(), kept)
			}
		})
	}

	// No daemon: an error that says so, for explain's "unknown".
	if _, err := askAttempts(filepath.Join(filepath.Dir(path), "none.ctl"), "u1", deadline); err == nil || !strings.Contains(err.Error(), "no daemon answers on ") {
		t.Errorf("no daemon: %v", err)
	}
}

// The reply fits in one control message, whatever the runtime's errors
// held: the oldest attempts are left out, never the message cut short.
func TestControlAttemptsReplyFits(t *testing.T) {
	store := attempts.New(0, 0)
	// Control characters are escaped by JSON to six bytes each.
	ugly := strings.Repeat("\x01", attempts.MaxMessage)
	for i := range attempts.MaxFound {
		store.Add(attempts.Attempt{Namespace: "team-a", Name: "tiny", UID: fmt.Sprint("u", i), Outcome: attempts.Failed, Code: "Unknown", Message: ugly})
		time.Sleep(time.Millisecond) // distinct times: newest first is defined
	}
	if b, _ := json.Marshal(store.Find("team-a/tiny")); len(b) <= maxReply {
		t.Fatalf("the test's attempts fit (%d bytes): it proves nothing", len(b))
	}
	rep, err := askAttempts(controlAt(t, store), "team-a/tiny", time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	n := len(rep.Attempts)
	if n == 0 || n >= attempts.MaxFound {
		t.Fatalf("got %d attempts; want some but not all %d", n, attempts.MaxFound)
	}
	if rep.Attempts[0].UID != fmt.Sprint("u", attempts.MaxFound-1) || rep.Attempts[0].Message != ugly {
		t.Errorf("the first is %q (message of %d bytes); want the newest, whole", rep.Attempts[0].UID, len(rep.Attempts[0].Message))
	}
}
