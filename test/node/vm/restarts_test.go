package vm

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// criError matches kubelet error lines about the runtime: what an outage of
// the CRI endpoint makes the kubelet log (sanity check, ListPodSandbox,
// ImageFsInfo, the eviction manager, PLEG, any rpc error).
var criError = regexp.MustCompile(`^E\d{4} .*(rpc error|[Rr]untime|PodSandbox|ImageFsInfo|[Ee]viction|PLEG|GetContainerEvents)`)

// containers returns name -> "id restarts" of the pod's containers.
func containers(pod *corev1.Pod) map[string]string {
	m := map[string]string{}
	for _, cs := range pod.Status.ContainerStatuses {
		m[cs.Name] = fmt.Sprintf("%s restarts=%d", cs.ContainerID, cs.RestartCount)
	}
	return m
}

// SetEventedPLEG switches the kubelet's EventedPLEG feature gate and
// restarts the kubelet; cleanup switches it back.
func SetEventedPLEG(t *testing.T, on bool) {
	t.Helper()
	const cfg = "/var/lib/kubelet/config.yaml"
	orig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	set := func(b []byte) {
		if err := os.WriteFile(cfg, b, 0o644); err != nil {
			t.Fatal(err)
		}
		Systemctl(t, "restart", "kubelet.service")
		Poll(t, "kubelet healthy", HangGuard, func() (bool, string) {
			_, err := get(KubeletURL + "/healthz")
			return err == nil, errString(err)
		})
	}
	want := fmt.Sprintf("EventedPLEG: %v", on)
	if strings.Contains(string(orig), want) {
		return
	}
	t.Cleanup(func() { set(orig) })
	set([]byte(strings.Replace(string(orig), fmt.Sprintf("EventedPLEG: %v", !on), want, 1)))
}

// upstreamTruth polls cri-guard's metrics (a read without side effects)
// until cri_guard_upstream_state{state="READY"} is 1, then checks that
// `cri-guard status` agrees, and returns how long the metric took (printed,
// not asserted: only the hang guard fails). A failure is an error, not
// fatal: the restarts after it still run and report their own faults.
func upstreamTruth(t *testing.T, what string) time.Duration {
	t.Helper()
	t0 := time.Now()
	metric := "READY"
	for {
		m := Metrics(t)
		if Metric(m, "cri_guard_upstream_state", map[string]string{"state": "READY"}) == 1 {
			break
		}
		if time.Since(t0) > HangGuard {
			t.Errorf(`%s: cri_guard_upstream_state{state="READY"} not 1 after %s: %s`, what, HangGuard,
				strings.Join(regexp.MustCompile(`(?m)^cri_guard_upstream_state.*$`).FindAllString(m, -1), "; "))
			metric = "not READY"
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	d := time.Since(t0)
	out, err := Run("cri-guard", "status", "--config", GuardConfig, "--json")
	var st struct {
		Daemon *struct {
			UpstreamState string `json:"upstreamState"`
		} `json:"daemon"`
	}
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Daemon == nil || st.Daemon.UpstreamState != "READY" {
		t.Errorf("%s: metrics say %s, `cri-guard status --json` says %s %v", what, metric, out, err)
	}
	return d
}

// TestRestartsUnderKubelet restarts cri-guard three times, then containerd,
// then the kubelet, under a running kubelet with a running pod, once with
// EventedPLEG off and once on. A cri-guard restart must cost the kubelet
// no CRI error (the socket outlives the process) but, with EventedPLEG,
// the one end of its event stream that cri-guard announces; after each
// restart the
// pod keeps its containers (same IDs, no restarts), and after containerd's
// restart cri-guard's metrics and status say READY without anyone fetching
// /readyz.
func TestRestartsUnderKubelet(t *testing.T) {
	WriteStaticPod(t, StaticPod("steady", sleeper("app", "64Mi")))
	for _, evented := range []bool{false, true} {
		t.Run(fmt.Sprintf("EventedPLEG=%v", evented), func(t *testing.T) {
			SetEventedPLEG(t, evented)
			before := containers(WaitRunning(t, "steady"))
			upstreamTruth(t, "before")

			for i := 1; i <= 3; i++ {
				log := MarkJournal(t, "kubelet")
				t0 := time.Now()
				Systemctl(t, "restart", "cri-guard.service")
				took := time.Since(t0)
				d := upstreamTruth(t, fmt.Sprintf("cri-guard restart %d", i))
				// Give the kubelet a few of its own cycles through the
				// new process before counting.
				Poll(t, "kubelet relisting through the new cri-guard", HangGuard, func() (bool, string) {
					_, err := Crictl("pods")
					return err == nil, errString(err)
				})
				WaitRunning(t, "steady")
				errs := criErrors(t, log)
				t.Logf("cri-guard restart %d: systemctl took %s, READY after %s, kubelet CRI errors: %d", i, took.Round(time.Millisecond), d.Round(time.Millisecond), len(errs))
				// A restart ends the kubelet's GetContainerEvents stream
				// (EventedPLEG): no process can keep it across its own
				// exit. cri-guard ends it with Unavailable and says so;
				// the kubelet logs that once and subscribes again. Any
				// other CRI error (the burst of issue 15: sanity check,
				// ListPodSandbox, ImageFsInfo, eviction) fails.
				unexpected, streamEnds := restartErrors(errs, evented)
				for _, e := range unexpected {
					t.Errorf("kubelet CRI error during cri-guard restart %d: %s", i, e)
				}
				if streamEnds > 1 {
					t.Errorf("cri-guard restart %d ended the kubelet's event stream %d times, want at most once", i, streamEnds)
				}
			}

			log := MarkJournal(t, "kubelet")
			Systemctl(t, "restart", "containerd.service")
			Poll(t, "containerd answering", HangGuard, func() (bool, string) {
				_, err := CrictlDirect("version")
				return err == nil, errString(err)
			})
			d := upstreamTruth(t, "containerd restart")
			t.Logf("containerd restart: cri-guard READY %s after containerd answered; kubelet CRI errors meanwhile: %d (containerd was down)", d.Round(time.Millisecond), len(criErrors(t, log)))

			Systemctl(t, "restart", "kubelet.service")
			Poll(t, "kubelet healthy", HangGuard, func() (bool, string) {
				_, err := get(KubeletURL + "/healthz")
				return err == nil, errString(err)
			})
			after := containers(WaitRunning(t, "steady"))
			if fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("containers before the restarts %v, after %v", before, after)
			}
		})
	}
}

func criErrors(t *testing.T, j *Journal) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(j.Text(t), "\n") {
		if criError.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// restartErrors splits the kubelet's CRI errors during a cri-guard restart
// into the announced end of the event stream (counted; EventedPLEG only)
// and the rest.
func restartErrors(errs []string, evented bool) (unexpected []string, streamEnds int) {
	for _, e := range errs {
		if evented && strings.Contains(e, `"failed to receive streaming container event"`) &&
			strings.Contains(e, "code = Unavailable desc = cri-guard: stopping") {
			streamEnds++
			continue
		}
		unexpected = append(unexpected, e)
	}
	return unexpected, streamEnds
}
