package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/internal/harness"
)

// eventsLive is the class of a GetContainerEvents answer that is a live
// stream: an event arrived (containerd 2.x hands the events it queued while
// nobody listened to the first subscriber, so which subscriber sees one
// depends on who came first), or none did before the caller's deadline.
const eventsLive = "a live stream"

// eventsWait is how long a GetContainerEvents answer is waited for before
// the stream counts as live. A runtime without the method (containerd 1.6)
// answers Unimplemented at once; the wait is long enough that a busy
// machine cannot make that answer look like a live stream.
const eventsWait = 10 * time.Second

// eventsAnswer opens a GetContainerEvents stream through c and returns the
// error of its first Recv (DeadlineExceeded: live, no event in eventsWait).
func eventsAnswer(c runtimeapi.RuntimeServiceClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), eventsWait)
	defer cancel()
	s, err := c.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	return err
}

var eventsProbes sync.Map // *harness.Runtime -> error of eventsAnswer

// eventsProbe is eventsAnswer at rt, once per runtime: tests skip on
// Unimplemented.
func eventsProbe(rt *harness.Runtime) error {
	if err, ok := eventsProbes.Load(rt); ok {
		e, _ := err.(error)
		return e
	}
	err := eventsAnswer(rt.CRI.Runtime)
	eventsProbes.Store(rt, err)
	return err
}

// eventsAnswerClass classifies the error of the first Recv on a
// GetContainerEvents stream: eventsLive, or the code and message the
// stream ended with (containerd 1.6: Unimplemented).
func eventsAnswerClass(err error) string {
	st := status.Convert(err)
	switch st.Code() {
	case codes.OK, codes.DeadlineExceeded:
		return eventsLive
	}
	return fmt.Sprintf("%v %q", st.Code(), st.Message())
}

// eventLog collects the events of one GetContainerEvents stream.
type eventLog struct {
	mu     sync.Mutex
	events []*runtimeapi.ContainerEventResponse
	err    error // why the stream ended
	more   chan struct{}
}

// subscribe opens a GetContainerEvents stream on c and collects its events
// until ctx ends.
func subscribe(ctx context.Context, t *testing.T, c runtimeapi.RuntimeServiceClient) *eventLog {
	t.Helper()
	l := &eventLog{more: make(chan struct{}, 1)}
	stream, err := c.GetContainerEvents(ctx, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatalf("GetContainerEvents: %v", err)
	}
	go func() {
		for {
			ev, err := stream.Recv()
			l.mu.Lock()
			if err != nil {
				l.err = err
			} else {
				l.events = append(l.events, ev)
			}
			l.mu.Unlock()
			select {
			case l.more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return l
}

// of returns the events about the container or sandbox id.
func (l *eventLog) of(id string) []*runtimeapi.ContainerEventResponse {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*runtimeapi.ContainerEventResponse
	for _, ev := range l.events {
		if ev.ContainerId == id {
			out = append(out, ev)
		}
	}
	return out
}

// others counts the events about none of ids: what containerd queued
// before the test (its backlog) or other tests' leftovers.
func (l *eventLog) others(ids ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for _, ev := range l.events {
		for _, id := range ids {
			if ev.ContainerId == id {
				continue next
			}
		}
		n++
	}
	return n
}

// waitFor waits until the stream has delivered an event of type typ about
// id. The deadline is a hang guard only.
func (l *eventLog) waitFor(t *testing.T, name, id string, typ runtimeapi.ContainerEventType) {
	t.Helper()
	if err := l.await(id, typ, 2*time.Minute); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// await waits up to d for an event of type typ about id.
func (l *eventLog) await(id string, typ runtimeapi.ContainerEventType, d time.Duration) error {
	deadline := time.After(d)
	for {
		for _, ev := range l.of(id) {
			if ev.ContainerEventType == typ {
				return nil
			}
		}
		l.mu.Lock()
		err := l.err
		l.mu.Unlock()
		if err != nil {
			return fmt.Errorf("the event stream ended before %v of %s: %w", typ, id, err)
		}
		select {
		case <-l.more:
		case <-deadline:
			return fmt.Errorf("no %v event for %s after %s", typ, id, d)
		}
	}
}

// TestContainerEventsRelayed subscribes to container events directly at
// containerd and through cri-guard (each forwarding core), drives a
// container through its life, and requires the same events, field for
// field, on both streams. containerd queues events while nobody listens
// and hands that backlog to whoever subscribes first, so only events of
// the test's own fresh pod are compared; the rest is counted and logged.
// containerd 1.6 has no GetContainerEvents: the test is skipped there (the
// lifecycle test checks that its Unimplemented comes through unchanged).
func TestContainerEventsRelayed(t *testing.T) {
	rt, bin := sharedRuntime(t)
	if err := eventsProbe(rt); status.Code(err) == codes.Unimplemented {
		t.Skipf("containerd %s has no GetContainerEvents (%v)", rt.Version, err)
	}
	for _, core := range []struct {
		name string
		args []string
	}{
		{"frames", nil},
		{"grpc", []string{"--forwarding", "grpc"}},
	} {
		t.Run(core.name, func(t *testing.T) {
			g := startGuard(t, rt, bin, core.args...)
			relayEvents(t, rt, g)
		})
	}
}

func relayEvents(t *testing.T, rt *harness.Runtime, g *harness.Guard) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends both subscriptions: containerd blocks on a subscriber that stops reading
	direct := subscribe(ctx, t, rt.CRI.Runtime)
	relayed := subscribe(ctx, t, g.CRI.Runtime)

	// containerd sends an event only to the subscribers it has at that
	// moment, and nothing tells when a subscription through cri-guard has
	// reached it. A beacon container's CREATED event on both streams shows
	// that both are live; a beacon one of them missed (it came too soon)
	// is followed by another. The wait per beacon only paces the retries.
	rs := rt.CRI.Runtime
	sb, cfg := runningPod(t, rt, kubelet(t, rt.Endpoint), 256<<20)
	for i := 1; ; i++ {
		cr, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb, Config: containerConfig(rt, fmt.Sprintf("beacon%d", i), 0), SandboxConfig: cfg})
		if err != nil {
			t.Fatal(err)
		}
		errD := direct.await(cr.ContainerId, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, 10*time.Second)
		errR := relayed.await(cr.ContainerId, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, 10*time.Second)
		if _, err := rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: cr.ContainerId}); err != nil {
			t.Fatal(err)
		}
		if errD == nil && errR == nil {
			t.Logf("both subscriptions live at beacon %d", i)
			break
		}
		if i == 10 {
			t.Fatalf("no beacon seen on both streams after %d tries: direct: %v; through cri-guard: %v", i, errD, errR)
		}
	}

	cr, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb, Config: containerConfig(rt, "app", 64<<20), SandboxConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	id := cr.ContainerId
	for _, step := range []func() error{
		func() error {
			_, err := rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
			return err
		},
		func() error {
			_, err := rs.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 5})
			return err
		},
		func() error {
			_, err := rs.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
			return err
		},
		func() error {
			_, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb})
			return err
		},
		func() error {
			_, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb})
			return err
		},
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []struct {
		name string
		log  *eventLog
	}{{"direct", direct}, {"through cri-guard", relayed}} {
		l.log.waitFor(t, l.name, id, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
		l.log.waitFor(t, l.name, sb, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
	}

	// Each of the container's four events once, directly. Not in a fixed
	// order: containerd's exit handler wakes StopContainer (cntr.Stop())
	// before it sends STOPPED, so under load the test's RemoveContainer
	// can send DELETED first (seen with two CPU hogs: CREATED STARTED
	// DELETED STOPPED). The relay's order is checked below, against the
	// direct stream: containerd's queue hands every subscriber the same
	// sequence.
	want := []runtimeapi.ContainerEventType{
		runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT,
	}
	d, r := direct.of(id), relayed.of(id)
	got := eventTypes(d)
	sorted := slices.Clone(got)
	slices.Sort(sorted)
	if fmt.Sprint(sorted) != fmt.Sprint(want) {
		t.Errorf("direct events of the container: %v, want each of %v once", got, want)
	} else if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Logf("containerd sent the container's events in the order %v", got)
	}
	// And the sandbox's stop and removal (its creation and start came
	// before the beacon, when a subscription may not have been live yet).
	d = append(d, ofType(direct.of(sb), runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)...)
	r = append(r, ofType(relayed.of(sb), runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)...)
	if len(d) != len(r) {
		t.Errorf("%d events directly, %d through cri-guard:\ndirect  %v\nrelayed %v", len(d), len(r), eventTypes(d), eventTypes(r))
	}
	for i := 0; i < len(d) && i < len(r); i++ {
		if !proto.Equal(d[i], r[i]) {
			t.Errorf("event %d differs:\ndirect:            %v\nthrough cri-guard: %v", i, d[i], r[i])
		}
	}
	t.Logf("%d events of the test's pod compared; other events (beacons, containerd's backlog, other tests): %d directly, %d through cri-guard",
		len(d), direct.others(id, sb), relayed.others(id, sb))
}

// ofType returns the events of the given types.
func ofType(evs []*runtimeapi.ContainerEventResponse, types ...runtimeapi.ContainerEventType) []*runtimeapi.ContainerEventResponse {
	var out []*runtimeapi.ContainerEventResponse
	for _, ev := range evs {
		for _, typ := range types {
			if ev.ContainerEventType == typ {
				out = append(out, ev)
			}
		}
	}
	return out
}

func eventTypes(evs []*runtimeapi.ContainerEventResponse) []runtimeapi.ContainerEventType {
	out := make([]runtimeapi.ContainerEventType, len(evs))
	for i, ev := range evs {
		out[i] = ev.ContainerEventType
	}
	return out
}
