package guard

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/pkg/policy"
)

// syncBuffer is a log buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// take returns what was logged since the last take.
func (b *syncBuffer) take() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.b.String()
	b.b.Reset()
	return s
}

// logTo makes g log text lines, without the time, to a new buffer.
func logTo(g *Guard) *syncBuffer {
	buf := &syncBuffer{}
	g.log = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}))
	g.events = newEvents(g.log)
	return buf
}

// TestDecisionsLoggedOnce: a refused pod that the kubelet retries is
// logged once, its repeats counted in the summary and by Record every
// time; another pod is logged on its own; an event that stops is
// forgotten, and logged in full when it comes back.
func TestDecisionsLoggedOnce(t *testing.T) {
	g, _ := newTestGuard(t, policy.ModeReject)
	buf := logTo(g)
	recorded := 0
	g.record = func(policy.Request, policy.Decision) { recorded++ }
	ctx := context.Background()
	run := func(name string) {
		req := &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
			Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "team-a", Uid: "u-" + name},
			Linux:    &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/kubepods/pod-tiny", Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 2000}},
		}}
		if _, err := g.RunPodSandbox(ctx, req, func(context.Context, *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
			t.Fatal("a refused pod reached the runtime")
			return nil, nil
		}); err == nil {
			t.Fatal("not refused")
		}
	}
	line := func(name string) string {
		return `level=INFO msg="policy decision" method=RunPodSandbox namespace=team-a pod=` + name + ` uid=u-` + name +
			` container="" action=reject reason=sandbox-below-floor limit=0 floor=12582912 message="pod team-a/` + name +
			`: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?" facts=""`
	}
	for range 5 {
		run("web")
	}
	run("db")
	if got, want := buf.take(), line("web")+"\n"+line("db")+"\n"; got != want {
		t.Errorf("log after 5 refusals of web and 1 of db:\n%s\nwant:\n%s", got, want)
	}
	if recorded != 6 {
		t.Errorf("Record told %d times, want 6", recorded)
	}
	g.events.summarize(ctx, 5*time.Minute)
	if got, want := buf.take(), `level=INFO msg="policy decision (repeated)"`+line("web")[len(`level=INFO msg="policy decision"`):]+" repeats=4 window=5m0s\n"; got != want {
		t.Errorf("summary:\n%s\nwant:\n%s", got, want)
	}
	run("web")
	g.events.summarize(ctx, 5*time.Minute) // web once more, not logged: counted; db not seen: forgotten
	if got, want := buf.take(), `level=INFO msg="policy decision (repeated)"`+line("web")[len(`level=INFO msg="policy decision"`):]+" repeats=1 window=5m0s\n"; got != want {
		t.Errorf("second summary:\n%s\nwant:\n%s", got, want)
	}
	g.events.summarize(ctx, 5*time.Minute) // nothing happened: web forgotten too
	if got := buf.take(); got != "" {
		t.Errorf("summary with nothing repeated:\n%s", got)
	}
	run("web")
	if got, want := buf.take(), line("web")+"\n"; got != want {
		t.Errorf("web again after it was forgotten:\n%s\nwant:\n%s", got, want)
	}
	run("db")
	if got, want := buf.take(), line("db")+"\n"; got != want {
		t.Errorf("db again after it was forgotten:\n%s\nwant:\n%s", got, want)
	}
}

// TestStatusRewriteLoggedAndCounted: every rewritten ContainerStatus is
// counted, and logged once per distinct message.
func TestStatusRewriteLoggedAndCounted(t *testing.T) {
	g, _, _ := newOOMGuard(t)
	buf := logTo(g)
	var reasons []string
	g.rewrote = func(r string) { reasons = append(reasons, r) }
	killed := &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: "c1", State: runtimeapi.ContainerState_CONTAINER_EXITED,
		Reason: "OOMKilled", ExitCode: 137, Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Labels: map[string]string{"io.kubernetes.pod.namespace": "team-a", "io.kubernetes.pod.name": "web"}}}
	for range 3 {
		if _, err := g.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: "c1"},
			func(context.Context, *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
				return killed, nil
			}); err != nil {
			t.Fatal(err)
		}
	}
	if len(reasons) != 3 || reasons[0] != "OOMKilled" || reasons[2] != "OOMKilled" {
		t.Errorf("Rewrote told %q, want OOMKilled three times", reasons)
	}
	want := `level=INFO msg="container status rewritten" namespace=team-a pod=web container=app id=c1 reason=OOMKilled message="cri-guard: pod team-a/web: container app was OOM-killed: its memory limit is 16777216 bytes (16Mi), its cgroup's peak usage is 16777216 bytes (16Mi), the pod cgroup's oom_kill counter is 2; fix: raise the memory limit above 16Mi or make the program use less memory"` + "\n"
	if got := buf.take(); got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
	g.events.summarize(context.Background(), time.Minute)
	if got := buf.take(); got != want[:len(`level=INFO msg="container status rewritten"`)-1]+` (repeated)"`+want[len(`level=INFO msg="container status rewritten"`):len(want)-1]+" repeats=2 window=1m0s\n" {
		t.Errorf("summary:\n%s", got)
	}
}

// TestEventsBounded: beyond maxEvents distinct events, events are logged
// every time instead of remembered.
func TestEventsBounded(t *testing.T) {
	buf := &syncBuffer{}
	e := newEvents(slog.New(slog.NewTextHandler(buf, nil)))
	for i := range maxEvents + 10 {
		e.note(context.Background(), slog.LevelInfo, eventKey{msg: "x", pod: string(rune('a' + i%26)), text: string(rune(i))})
	}
	if len(e.m) != maxEvents {
		t.Errorf("%d events remembered, want %d", len(e.m), maxEvents)
	}
	e.note(context.Background(), slog.LevelInfo, eventKey{msg: "x", text: "new"})
	e.note(context.Background(), slog.LevelInfo, eventKey{msg: "x", text: "new"})
	if n := bytes.Count([]byte(buf.take()), []byte("\n")); n != maxEvents+12 {
		t.Errorf("%d lines, want %d", n, maxEvents+12)
	}
}
