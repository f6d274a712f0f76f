package floorcases

import "github.com/cri-guard/cri-guard/pkg/policy"

// Config is the node configuration every case is checked against.
const Config = `
sandboxMinMemory: 12Mi
containerMinMemory: 6Mi
exemptNamespaces: [kube-system, batch-system]
runtimeHandlers:
  crun:
    sandboxMinMemory: 500Ki
    containerMinMemory: 500Ki
`

// Policy is Config resolved, for tests that need no config file.
var Policy = policy.Config{
	Mode:             policy.ModeReject,
	Floors:           policy.Floors{Sandbox: 12 * policy.MiB, Container: 6 * policy.MiB},
	Handlers:         map[string]policy.Floors{"crun": {Sandbox: 500 * policy.KiB, Container: 500 * policy.KiB}},
	ExemptNamespaces: []string{"kube-system", "batch-system"},
}

// RuntimeClass is one that the cases' pods name; a cluster running the
// cases must have them (the RuntimeClass admission plugin refuses a pod
// whose class does not exist, or whose overhead is not its class's).
type RuntimeClass struct {
	Name, Handler  string
	OverheadMemory string // empty: none
}

// RuntimeClasses are the classes the cases name.
var RuntimeClasses = []RuntimeClass{
	{Name: "crun", Handler: "crun"},
	{Name: "vm", Handler: "vm", OverheadMemory: "8Mi"},
}

// Case is one object and what is said of it.
type Case struct {
	Name string
	// Namespace is the object's, also set in YAML.
	Namespace string
	YAML      string
	// Want is every refusal, in the order in which the kubelet makes the
	// calls (the sandbox, then init, regular and ephemeral containers);
	// empty when the object passes. The node refuses the first call in
	// this list and the pod goes no further; the admission policy says
	// the first; the linter reports all of them.
	Want []string
}

// pod returns a Pod manifest with the given spec (indented by 2).
func pod(name, ns, extraMeta, spec string) string {
	return "apiVersion: v1\nkind: Pod\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\n" + extraMeta + "spec:\n" + spec
}

// one is a pod spec with a single container limited to mem.
func one(mem string) string {
	return "  containers:\n  - name: app\n    image: busybox\n    resources:\n      limits:\n        memory: " + mem + "\n"
}

func workload(kind, apiVersion, name, ns, templateSpecPrefix, podSpec string) string {
	return "apiVersion: " + apiVersion + "\nkind: " + kind + "\nmetadata:\n  name: " + name + "\n  namespace: " + ns + "\n" + templateSpecPrefix + indent(podSpec)
}

func indent(s string) string {
	out := ""
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out += "    " + s[start:i+1]
			start = i + 1
		}
	}
	return out
}

const (
	deploymentTemplate = "spec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n"
)

// Cases is the table.
var Cases = []Case{
	{
		Name: "2000 without a unit", Namespace: "team-a",
		YAML: pod("web", "team-a", "", one(`"2000"`)),
		Want: []string{
			"pod team-a/web: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?",
			"pod team-a/web, container app: memory limit 2000 bytes is below the 6Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 2000Mi?",
		},
	},
	{
		Name: "500m is half a byte", Namespace: "team-a",
		YAML: pod("web", "team-a", "", one("500m")),
		Want: []string{
			`pod team-a/web: memory limit 1 byte is below the 12Mi minimum needed to start the pod sandbox; the "m" suffix means thousandths, so a limit such as 500m is half a byte (rounded up to 1 byte): did you mean Mi, as in 500Mi?`,
			`pod team-a/web, container app: memory limit 1 byte is below the 6Mi minimum needed to start a container; the "m" suffix means thousandths, so a limit such as 500m is half a byte (rounded up to 1 byte): did you mean Mi, as in 500Mi?`,
		},
	},
	{
		Name: "1e3 is 1000 bytes", Namespace: "team-a",
		YAML: pod("web", "team-a", "", one("1e3")),
		Want: []string{
			"pod team-a/web: memory limit 1000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 1000Mi?",
			"pod team-a/web, container app: memory limit 1000 bytes is below the 6Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 1000Mi?",
		},
	},
	{
		Name: "12Mi passes", Namespace: "team-a",
		YAML: pod("web", "team-a", "", one("12Mi")),
	},
	{
		Name: "0.5Gi passes", Namespace: "team-a",
		YAML: pod("web", "team-a", "", one("0.5Gi")),
	},
	{
		Name: "12M is less than 12Mi", Namespace: "team-a",
		YAML: pod("web", "team-a", "", one("12M")),
		Want: []string{
			"pod team-a/web: memory limit 12000000 bytes (12M) is below the 12Mi minimum needed to start the pod sandbox; set the memory limit to at least 12Mi",
		},
	},
	{
		Name: "8Mi: the container starts, the pod sandbox does not", Namespace: "team-a",
		YAML: pod("web", "team-a", "", one("8Mi")),
		Want: []string{
			"pod team-a/web: memory limit 8388608 bytes (8Mi) is below the 12Mi minimum needed to start the pod sandbox; set the memory limit to at least 12Mi",
		},
	},
	{
		Name: "two containers of 8Mi make a pod of 16Mi", Namespace: "team-a",
		YAML: pod("web", "team-a", "", "  containers:\n  - {name: a, image: busybox, resources: {limits: {memory: 8Mi}}}\n  - {name: b, image: busybox, resources: {limits: {memory: 8Mi}}}\n"),
	},
	{
		Name: "a container without a limit leaves the pod cgroup unlimited", Namespace: "team-a",
		YAML: pod("web", "team-a", "", "  containers:\n  - {name: a, image: busybox}\n  - {name: b, image: busybox, resources: {limits: {memory: \"2000\"}}}\n"),
		Want: []string{
			"pod team-a/web, container b: memory limit 2000 bytes is below the 6Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 2000Mi?",
		},
	},
	{
		Name: "an init container larger than the containers sizes the pod", Namespace: "team-a",
		YAML: pod("web", "team-a", "", "  initContainers:\n  - {name: setup, image: busybox, resources: {limits: {memory: 10Mi}}}\n  containers:\n  - {name: app, image: busybox, resources: {limits: {memory: 8Mi}}}\n"),
		Want: []string{
			"pod team-a/web: memory limit 10485760 bytes (10Mi) is below the 12Mi minimum needed to start the pod sandbox; set the memory limit to at least 12Mi",
		},
	},
	{
		Name: "an init container below the floor is refused before the containers", Namespace: "team-a",
		YAML: pod("web", "team-a", "", "  initContainers:\n  - {name: setup, image: busybox, resources: {limits: {memory: \"4096\"}}}\n  containers:\n  - {name: app, image: busybox, resources: {limits: {memory: 64Mi}}}\n  - {name: log, image: busybox, resources: {limits: {memory: 5Mi}}}\n"),
		Want: []string{
			"pod team-a/web, container setup: memory limit 4096 bytes (4Ki) is below the 6Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 4096Mi?",
			"pod team-a/web, container log: memory limit 5242880 bytes (5Mi) is below the 6Mi minimum needed to start a container; set the memory limit to at least 6Mi",
		},
	},
	{
		Name: "a sidecar adds to the containers", Namespace: "team-a",
		YAML: pod("web", "team-a", "", "  initContainers:\n  - {name: proxy, image: busybox, restartPolicy: Always, resources: {limits: {memory: 6Mi}}}\n  containers:\n  - {name: app, image: busybox, resources: {limits: {memory: 6Mi}}}\n"),
	},
	{
		Name: "an init container after a sidecar runs beside it", Namespace: "team-a",
		YAML: pod("web", "team-a", "", "  initContainers:\n  - {name: proxy, image: busybox, restartPolicy: Always, resources: {limits: {memory: 3Mi}}}\n  - {name: migrate, image: busybox, resources: {limits: {memory: 10Mi}}}\n  containers:\n  - {name: app, image: busybox, resources: {limits: {memory: 6Mi}}}\n"),
		// The pod: max(6Mi + 3Mi, 10Mi + 3Mi) = 13Mi, enough for the
		// sandbox; the sidecar is below the container floor.
		Want: []string{
			"pod team-a/web, container proxy: memory limit 3145728 bytes (3Mi) is below the 6Mi minimum needed to start a container; set the memory limit to at least 6Mi",
		},
	},
	{
		Name: "an init container before a sidecar does not", Namespace: "team-a",
		YAML: pod("web", "team-a", "", "  initContainers:\n  - {name: migrate, image: busybox, resources: {limits: {memory: 11Mi}}}\n  - {name: proxy, image: busybox, restartPolicy: Always, resources: {limits: {memory: 3Mi}}}\n  containers:\n  - {name: app, image: busybox, resources: {limits: {memory: 7Mi}}}\n"),
		// The pod: max(7Mi + 3Mi, 11Mi) = 11Mi; the sidecar is below the container floor.
		Want: []string{
			"pod team-a/web: memory limit 11534336 bytes (11Mi) is below the 12Mi minimum needed to start the pod sandbox; set the memory limit to at least 12Mi",
			"pod team-a/web, container proxy: memory limit 3145728 bytes (3Mi) is below the 6Mi minimum needed to start a container; set the memory limit to at least 6Mi",
		},
	},
	{
		Name: "the overhead is part of the pod cgroup", Namespace: "team-a",
		YAML: pod("web", "team-a", "", "  runtimeClassName: vm\n  overhead: {memory: 8Mi}\n"+one("8Mi")),
	},
	{
		Name: "pod-level limit of 2000 bytes, also the container's", Namespace: "team-a",
		YAML: pod("web", "team-a", "", "  resources: {limits: {memory: \"2000\"}}\n  containers:\n  - {name: app, image: busybox}\n"),
		Want: []string{
			"pod team-a/web: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?",
			"pod team-a/web, container app: memory limit 2000 bytes is below the 6Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 2000Mi?",
		},
	},
	{
		Name: "pod-level limit sizes the pod cgroup, not the containers' sum", Namespace: "team-a",
		YAML: pod("web", "team-a", "", "  resources: {limits: {memory: 64Mi}}\n  containers:\n  - {name: app, image: busybox, resources: {limits: {memory: 8Mi}}}\n"),
	},
	{
		Name: "the crun handler's floors", Namespace: "team-a",
		YAML: pod("web", "team-a", "", "  runtimeClassName: crun\n"+one("1Mi")),
	},
	{
		Name: "the crun handler's floors, with a unitless limit", Namespace: "team-a",
		YAML: pod("web", "team-a", "", "  runtimeClassName: crun\n"+one(`"2000"`)),
		Want: []string{
			"pod team-a/web: memory limit 2000 bytes is below the 500Ki minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?",
			"pod team-a/web, container app: memory limit 2000 bytes is below the 500Ki minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 2000Mi?",
		},
	},
	{
		Name: "an exempt namespace", Namespace: "kube-system",
		YAML: pod("web", "kube-system", "", one(`"2000"`)),
	},
	{
		Name: "the skip annotation", Namespace: "team-a",
		YAML: pod("web", "team-a", "  annotations: {cri-guard.io/skip: \"True\"}\n", one(`"2000"`)),
	},
	{
		Name: "the skip annotation must say true", Namespace: "team-a",
		YAML: pod("web", "team-a", "  annotations: {cri-guard.io/skip: \"yes\"}\n", one("8Mi")),
		Want: []string{
			"pod team-a/web: memory limit 8388608 bytes (8Mi) is below the 12Mi minimum needed to start the pod sandbox; set the memory limit to at least 12Mi",
		},
	},
	{
		Name: "Deployment of 2000 bytes", Namespace: "team-a",
		YAML: workload("Deployment", "apps/v1", "web", "team-a", deploymentTemplate, one(`"2000"`)),
		Want: []string{
			"deployment team-a/web: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?",
			"deployment team-a/web, container app: memory limit 2000 bytes is below the 6Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 2000Mi?",
		},
	},
	{
		Name: "Deployment of 2000Mi", Namespace: "team-a",
		YAML: workload("Deployment", "apps/v1", "web", "team-a", deploymentTemplate, one("2000Mi")),
	},
	{
		Name: "Deployment whose template skips", Namespace: "team-a",
		YAML: workload("Deployment", "apps/v1", "web", "team-a",
			"spec:\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n      annotations: {cri-guard.io/skip: \"true\"}\n    spec:\n", one(`"2000"`)),
	},
	{
		Name: "ReplicaSet", Namespace: "team-a",
		YAML: workload("ReplicaSet", "apps/v1", "web", "team-a", deploymentTemplate, one("8Mi")),
		Want: []string{
			"replicaset team-a/web: memory limit 8388608 bytes (8Mi) is below the 12Mi minimum needed to start the pod sandbox; set the memory limit to at least 12Mi",
		},
	},
	{
		Name: "StatefulSet", Namespace: "team-a",
		YAML: workload("StatefulSet", "apps/v1", "db", "team-a", "spec:\n  serviceName: db\n  selector:\n    matchLabels: {app: db}\n  template:\n    metadata:\n      labels: {app: db}\n    spec:\n", one("5Mi")),
		Want: []string{
			"statefulset team-a/db: memory limit 5242880 bytes (5Mi) is below the 12Mi minimum needed to start the pod sandbox; set the memory limit to at least 12Mi",
			"statefulset team-a/db, container app: memory limit 5242880 bytes (5Mi) is below the 6Mi minimum needed to start a container; set the memory limit to at least 6Mi",
		},
	},
	{
		Name: "DaemonSet", Namespace: "team-a",
		YAML: workload("DaemonSet", "apps/v1", "agent", "team-a", "spec:\n  selector:\n    matchLabels: {app: agent}\n  template:\n    metadata:\n      labels: {app: agent}\n    spec:\n", one("64Mi")),
	},
	{
		Name: "Job", Namespace: "team-a",
		YAML: workload("Job", "batch/v1", "once", "team-a", "spec:\n  template:\n    spec:\n", "  restartPolicy: Never\n"+one("1500000")),
		Want: []string{
			"job team-a/once: memory limit 1500000 bytes is below the 12Mi minimum needed to start the pod sandbox; set the memory limit to at least 12Mi",
			"job team-a/once, container app: memory limit 1500000 bytes is below the 6Mi minimum needed to start a container; set the memory limit to at least 6Mi",
		},
	},
	{
		Name: "CronJob", Namespace: "team-a",
		YAML: "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: nightly\n  namespace: team-a\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers:\n          - {name: app, image: busybox, resources: {limits: {memory: 500m}}}\n",
		Want: []string{
			`cronjob team-a/nightly: memory limit 1 byte is below the 12Mi minimum needed to start the pod sandbox; the "m" suffix means thousandths, so a limit such as 500m is half a byte (rounded up to 1 byte): did you mean Mi, as in 500Mi?`,
			`cronjob team-a/nightly, container app: memory limit 1 byte is below the 6Mi minimum needed to start a container; the "m" suffix means thousandths, so a limit such as 500m is half a byte (rounded up to 1 byte): did you mean Mi, as in 500Mi?`,
		},
	},
	{
		Name: "Job in an exempt namespace", Namespace: "batch-system",
		YAML: workload("Job", "batch/v1", "once", "batch-system", "spec:\n  template:\n    spec:\n", "  restartPolicy: Never\n"+one(`"2000"`)),
	},
}
