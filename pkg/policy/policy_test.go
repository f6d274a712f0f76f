package policy

import "testing"

func TestDecide(t *testing.T) {
	base := Config{
		Mode:             ModeReject,
		Floors:           Floors{Sandbox: 12 * MiB, Container: 12 * MiB},
		Handlers:         map[string]Floors{"crun": {Sandbox: 500 * KiB}},
		ExemptNamespaces: []string{"kube-system"},
	}
	web := Pod{Namespace: "team-a", Name: "web", UID: "u1"}
	limited := func(b int64) Memory { return Memory{State: Limited, Bytes: b} }
	unknown := Memory{State: Unknown, Why: "open /sys/fs/cgroup/memory/x/memory.limit_in_bytes: no such file or directory"}
	with := func(f func(*Config)) Config { c := base; f(&c); return c }

	for name, tc := range map[string]struct {
		cfg  Config
		req  Request
		want Decision
	}{
		"sandbox 2000 bytes, cgroup reads 0, hint 2000": {
			cfg: base,
			req: Request{Method: RunPodSandbox, Pod: web, PodLimit: 2000, PodCgroup: limited(0)},
			want: Decision{Action: Reject, Reason: ReasonSandboxBelow, Floor: 12 * MiB,
				Message: "pod team-a/web: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?"},
		},
		"sandbox with no hint, as older kubelets send it": {
			cfg: base,
			req: Request{Method: RunPodSandbox, Pod: web, PodCgroup: limited(0)},
			want: Decision{Action: Reject, Reason: ReasonSandboxBelow, Floor: 12 * MiB,
				Message: "pod team-a/web: memory limit 0 bytes (the pod cgroup's limit; the kernel rounds limits below one page down to 0) is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least 12Mi"},
		},
		"sandbox 8Mi": {
			cfg: base,
			req: Request{Method: RunPodSandbox, Pod: web, PodLimit: 8 * MiB, PodCgroup: limited(8 * MiB)},
			want: Decision{Action: Reject, Reason: ReasonSandboxBelow, Floor: 12 * MiB,
				Message: "pod team-a/web: memory limit 8388608 bytes (8Mi) is below the 12Mi minimum needed to start the pod sandbox; set the memory limit to at least 12Mi"},
		},
		"sandbox 500m rounds up to one byte": {
			cfg: base,
			req: Request{Method: RunPodSandbox, Pod: web, PodLimit: 1, PodCgroup: limited(0)},
			want: Decision{Action: Reject, Reason: ReasonSandboxBelow, Floor: 12 * MiB,
				Message: `pod team-a/web: memory limit 1 byte is below the 12Mi minimum needed to start the pod sandbox; the "m" suffix means thousandths, so a limit such as 500m is half a byte (rounded up to 1 byte): did you mean Mi, as in 500Mi?`},
		},
		"the cgroup and the hint differ: both are named, the cgroup's decides": {
			cfg: base,
			req: Request{Method: RunPodSandbox, Pod: web, PodLimit: 64 * MiB, PodCgroup: limited(0)},
			want: Decision{Action: Reject, Reason: ReasonSandboxBelow, Floor: 12 * MiB,
				Message: "pod team-a/web: memory limit 0 bytes (the pod cgroup's limit; the pod's Linux.Resources says 67108864 bytes (64Mi)) is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least 12Mi"},
		},
		"floor 1Ki: the hint is above it, the cgroup rounded to 0 is not": {
			cfg: with(func(c *Config) { c.Floors.Sandbox = KiB }),
			req: Request{Method: RunPodSandbox, Pod: web, PodLimit: 2000, PodCgroup: limited(0)},
			want: Decision{Action: Reject, Reason: ReasonSandboxBelow, Floor: KiB,
				Message: "pod team-a/web: memory limit 0 bytes (the pod cgroup's limit: the kernel rounds limits down to whole pages, so the 2000 bytes the pod asked for read back as 0 bytes) is below the 1Ki minimum needed to start the pod sandbox; a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least 4Ki"},
		},
		"floor of 1 byte reads as a size": {
			cfg: with(func(c *Config) { c.Floors.Sandbox = 1 }),
			req: Request{Method: RunPodSandbox, Pod: web, PodLimit: 2000, PodCgroup: limited(0)},
			want: Decision{Action: Reject, Reason: ReasonSandboxBelow, Floor: 1,
				Message: "pod team-a/web: memory limit 0 bytes (the pod cgroup's limit: the kernel rounds limits down to whole pages, so the 2000 bytes the pod asked for read back as 0 bytes) is below the 1 byte minimum needed to start the pod sandbox; a memory quantity without a unit is bytes: give the limit in Mi or Gi, at least 4Ki"},
		},
		"container floor of 2000 bytes": {
			cfg: with(func(c *Config) { c.Floors.Container = 2000 }),
			req: Request{Method: CreateContainer, Pod: web, Container: "app", ContainerLimit: 1000},
			want: Decision{Action: Reject, Reason: ReasonContainerBelow, Floor: 2000,
				Message: "pod team-a/web, container app: memory limit 1000 bytes is below the 2000 bytes minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 1000Mi?"},
		},
		"unreadable cgroup: the hint with its overhead is named": {
			cfg: base,
			req: Request{Method: RunPodSandbox, Pod: web, PodLimit: 4 * MiB, Overhead: 4 * MiB, PodCgroup: unknown},
			want: Decision{Action: Reject, Reason: ReasonSandboxBelow, Floor: 12 * MiB,
				Message: "pod team-a/web: memory limit 8388608 bytes (8Mi) (4194304 bytes (4Mi) plus 4194304 bytes (4Mi) of pod overhead) is below the 12Mi minimum needed to start the pod sandbox; set the memory limit to at least 12Mi"},
		},
		"cgroup is the truth over the hint": {
			cfg:  base,
			req:  Request{Method: RunPodSandbox, Pod: web, PodLimit: 2000, PodCgroup: limited(64 * MiB)},
			want: Decision{Action: Allow, Reason: ReasonWithinFloor, Floor: 12 * MiB},
		},
		"unlimited pod passes": {
			cfg:  base,
			req:  Request{Method: RunPodSandbox, Pod: web, PodCgroup: Memory{State: Unlimited}},
			want: Decision{Action: Allow, Reason: ReasonNoLimit, Floor: 12 * MiB},
		},
		"unreadable cgroup falls back to the hint": {
			cfg: base,
			req: Request{Method: RunPodSandbox, Pod: web, PodLimit: 4 * MiB, PodCgroup: unknown},
			want: Decision{Action: Reject, Reason: ReasonSandboxBelow, Floor: 12 * MiB,
				Message: "pod team-a/web: memory limit 4194304 bytes (4Mi) is below the 12Mi minimum needed to start the pod sandbox; set the memory limit to at least 12Mi"},
		},
		"unreadable cgroup: the hint includes the overhead, as the pod cgroup does": {
			cfg:  base,
			req:  Request{Method: RunPodSandbox, Pod: web, PodLimit: 8 * MiB, Overhead: 8 * MiB, PodCgroup: unknown},
			want: Decision{Action: Allow, Reason: ReasonWithinFloor, Floor: 12 * MiB},
		},
		"unreadable cgroup and no hint fails open": {
			cfg:  base,
			req:  Request{Method: RunPodSandbox, Pod: web, PodCgroup: unknown},
			want: Decision{Action: Allow, Reason: ReasonLimitUnknown, Floor: 12 * MiB},
		},
		"unreadable cgroup and no hint, fail closed": {
			cfg: with(func(c *Config) { c.FailClosed = true }),
			req: Request{Method: RunPodSandbox, Pod: web, PodCgroup: unknown},
			want: Decision{Action: Reject, Reason: ReasonLimitUnknown, Floor: 12 * MiB,
				Message: "pod team-a/web: cri-guard cannot read the pod's memory limit (open /sys/fs/cgroup/memory/x/memory.limit_in_bytes: no such file or directory) and is set to fail closed; ask the node's administrator"},
		},
		"sandbox in audit mode": {
			cfg: with(func(c *Config) { c.Mode = ModeAudit }),
			req: Request{Method: RunPodSandbox, Pod: web, PodLimit: 2000, PodCgroup: limited(0)},
			want: Decision{Action: Audit, Reason: ReasonSandboxBelow, Floor: 12 * MiB,
				Message: "pod team-a/web: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?"},
		},
		"sandbox in raise mode is still refused": {
			cfg: with(func(c *Config) { c.Mode = ModeRaise }),
			req: Request{Method: RunPodSandbox, Pod: web, PodLimit: 2000, PodCgroup: limited(0)},
			want: Decision{Action: Reject, Reason: ReasonSandboxBelow, Floor: 12 * MiB,
				Message: "pod team-a/web: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?"},
		},
		"per-handler floor": {
			cfg:  base,
			req:  Request{Method: RunPodSandbox, Pod: Pod{Namespace: "a", Name: "b", RuntimeHandler: "crun"}, PodCgroup: limited(1 * MiB)},
			want: Decision{Action: Allow, Reason: ReasonWithinFloor, Floor: 500 * KiB},
		},
		"exempt namespace": {
			cfg:  base,
			req:  Request{Method: RunPodSandbox, Pod: Pod{Namespace: "kube-system", Name: "x"}, PodCgroup: limited(0)},
			want: Decision{Action: Allow, Reason: ReasonExempt},
		},
		"exempt by annotation": {
			cfg:  base,
			req:  Request{Method: CreateContainer, Pod: Pod{Namespace: "a", Name: "b", Annotations: map[string]string{SkipAnnotation: "true"}}, ContainerLimit: 1},
			want: Decision{Action: Allow, Reason: ReasonExempt},
		},
		"resize the pod below the floor": {
			cfg: base,
			req: Request{Method: UpdatePodSandboxResources, Pod: web, PodLimit: 3000, PodCgroup: limited(64 * MiB)},
			want: Decision{Action: Reject, Reason: ReasonSandboxBelow, Floor: 12 * MiB,
				Message: "pod team-a/web: memory limit 3000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 3000Mi?"},
		},
		"container 2000 bytes": {
			cfg: base,
			req: Request{Method: CreateContainer, Pod: web, Container: "app", ContainerLimit: 2000, PodCgroup: limited(1 * GiB)},
			want: Decision{Action: Reject, Reason: ReasonContainerBelow, Floor: 12 * MiB,
				Message: "pod team-a/web, container app: memory limit 2000 bytes is below the 12Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 2000Mi?"},
		},
		"container update to 2000 bytes": {
			cfg: base,
			req: Request{Method: UpdateContainerResources, Pod: web, Container: "app", ContainerLimit: 2000},
			want: Decision{Action: Reject, Reason: ReasonContainerBelow, Floor: 12 * MiB,
				Message: "pod team-a/web, container app: memory limit 2000 bytes is below the 12Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 2000Mi?"},
		},
		"container unset limit passes": {
			cfg:  base,
			req:  Request{Method: CreateContainer, Pod: web, Container: "app"},
			want: Decision{Action: Allow, Reason: ReasonNoLimit, Floor: 12 * MiB},
		},
		"container negative limit passes to the runtime": {
			cfg:  base,
			req:  Request{Method: CreateContainer, Pod: web, Container: "app", ContainerLimit: -1},
			want: Decision{Action: Allow, Reason: ReasonNegativeLimit, Floor: 12 * MiB},
		},
		"container raise": {
			cfg: with(func(c *Config) { c.Mode = ModeRaise }),
			req: Request{Method: CreateContainer, Pod: web, Container: "app", ContainerLimit: 2000, PodCgroup: limited(1 * GiB)},
			want: Decision{Action: Raise, Reason: ReasonContainerBelow, Floor: 12 * MiB, Limit: 12 * MiB,
				Message: "pod team-a/web, container app: memory limit 2000 bytes is below the 12Mi minimum needed to start a container; raised to 12Mi"},
		},
		"container raise with an unlimited pod": {
			cfg: with(func(c *Config) { c.Mode = ModeRaise }),
			req: Request{Method: CreateContainer, Pod: web, Container: "app", ContainerLimit: 2000, PodCgroup: Memory{State: Unlimited}},
			want: Decision{Action: Raise, Reason: ReasonContainerBelow, Floor: 12 * MiB, Limit: 12 * MiB,
				Message: "pod team-a/web, container app: memory limit 2000 bytes is below the 12Mi minimum needed to start a container; raised to 12Mi"},
		},
		"container raise in a pod below the floor": {
			cfg: with(func(c *Config) { c.Mode = ModeRaise }),
			req: Request{Method: CreateContainer, Pod: web, Container: "app", ContainerLimit: 2000, PodCgroup: limited(8 * MiB)},
			want: Decision{Action: Reject, Reason: ReasonPodBelowForRaise, Floor: 12 * MiB,
				Message: "pod team-a/web, container app: memory limit 2000 bytes is below the 12Mi minimum needed to start a container, and cannot be raised because the pod's own memory limit is 8388608 bytes (8Mi); a memory quantity without a unit is bytes, did you mean 2000Mi?"},
		},
		"container audit": {
			cfg: with(func(c *Config) { c.Mode = ModeAudit }),
			req: Request{Method: CreateContainer, Pod: web, Container: "app", ContainerLimit: 6_000_000},
			want: Decision{Action: Audit, Reason: ReasonContainerBelow, Floor: 12 * MiB,
				Message: "pod team-a/web, container app: memory limit 6000000 bytes (6M) is below the 12Mi minimum needed to start a container; set the memory limit to at least 12Mi"},
		},
		"empty metadata": {
			cfg: base,
			req: Request{Method: CreateContainer, ContainerLimit: 2000},
			want: Decision{Action: Reject, Reason: ReasonContainerBelow, Floor: 12 * MiB,
				Message: "pod <unnamed>/<unnamed>, container <unnamed>: memory limit 2000 bytes is below the 12Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 2000Mi?"},
		},
		"no floor": {
			cfg:  Config{Mode: ModeReject},
			req:  Request{Method: RunPodSandbox, Pod: web, PodCgroup: limited(0)},
			want: Decision{Action: Allow, Reason: ReasonWithinFloor},
		},
	} {
		t.Run(name, func(t *testing.T) {
			got := tc.cfg.Decide(tc.req)
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestQuantity(t *testing.T) {
	for in, want := range map[int64]string{
		0: "0 bytes", 1: "1 byte", 2000: "2000 bytes", 12 * MiB: "12582912 bytes (12Mi)",
		1536 * KiB: "1572864 bytes (1536Ki)", 6_000_000: "6000000 bytes (6M)", GiB + 1: "1073741825 bytes",
	} {
		if got := Bytes(in); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", in, got, want)
		}
	}
	for name, tc := range map[string]struct {
		in   string
		want int64
		err  string
	}{
		"Mi":                     {in: "12Mi", want: 12 * MiB},
		"bytes":                  {in: "2000", want: 2000},
		"milli":                  {in: "500m", want: 1},
		"exponent":               {in: "1e3", want: 1000},
		"negative":               {in: "-1", err: `"-1" is negative`},
		"negative exponent form": {in: "-1e400", err: `"-1e400" is out of range: the exponent is beyond ±30`},
		"largest":                {in: "9223372036854775807", want: 1<<63 - 1},
		"exa":                    {in: "7E", want: 7_000_000_000_000_000_000},
		"one past":               {in: "9223372036854775808", err: `"9223372036854775808" is out of range: more than 9223372036854775807 bytes`},
		"too large":              {in: "1e19", err: `"1e19" is out of range: more than 9223372036854775807 bytes`},
		"8Ei capped":             {in: "8Ei", want: 1<<63 - 1}, // apimachinery caps binary suffixes
		"huge exponent":          {in: "1e400", err: `"1e400" is out of range: the exponent is beyond ±30`},
		"exponent past int":      {in: "9223e372036854775807", err: `"9223e372036854775807" is out of range: the exponent is beyond ±30`},
		"tiny exponent":          {in: "1e-31", err: `"1e-31" is out of range: the exponent is beyond ±30`},
		"small exponent":         {in: "1e-30", want: 1},
		"docker unit":            {in: "12MB", err: `"12MB" is not a quantity (use a number of bytes or a suffix such as Ki, Mi, Gi): quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'`},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := ParseQuantity(tc.in)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("got %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}
