package lint

import (
	"reflect"
	"strings"
	"testing"

	"github.com/cri-guard/cri-guard/pkg/policy"
)

func testLinter() *Linter {
	return &Linter{
		Policy: &policy.Config{Floors: policy.Floors{Sandbox: 12 * policy.MiB, Container: 12 * policy.MiB},
			Handlers:         map[string]policy.Floors{"kata-qemu": {Sandbox: 64 * policy.MiB, Container: 64 * policy.MiB}},
			ExemptNamespaces: []string{"kube-system"}},
		RuntimeClasses: map[string]string{"kata": "kata-qemu"},
	}
}

// TestCheck: where each finding is (file and line of the value that
// decided it), for the shapes in which CI pipelines have manifests.
func TestCheck(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		want []string
	}{
		"multi-document YAML, line of the limit; other kinds ignored": {
			in: `# a comment
apiVersion: v1
kind: Service
metadata: {name: web}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
      - name: app
        resources:
          limits:
            memory: 8Mi
      - name: side
        resources:
          limits:
            memory: 64Mi
`,
			want: []string{
				"f.yaml:17: deployment default/web, container app: memory limit 8388608 bytes (8Mi) is below the 12Mi minimum needed to start a container",
			},
		},
		"the first regular container with a limit locates the sandbox's finding": {
			in: "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\nspec:\n  containers:\n  - name: a\n    resources: {limits: {memory: 6Mi}}\n  initContainers:\n  - name: i\n    resources: {limits: {memory: 4Mi}}\n",
			want: []string{
				"f.yaml:7: pod ns/p: memory limit 6291456 bytes (6Mi) is below the 12Mi minimum needed to start the pod sandbox",
				"f.yaml:10: pod ns/p, container i: memory limit 4194304 bytes (4Mi)",
				"f.yaml:7: pod ns/p, container a: memory limit 6291456 bytes (6Mi)",
			},
		},
		"List kinds and JSON": {
			in: `{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"},
   "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "12Mi"}}}]}},
  {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b"},
   "spec": {"containers": [{"name": "c",
      "resources": {"limits": {"memory": "500m"}}}]}}
]}`,
			want: []string{
				"f.yaml:6: pod default/b: memory limit 1 byte",
				"f.yaml:6: pod default/b, container c: memory limit 1 byte",
			},
		},
		"a stream of JSON objects": {
			in: "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"a\"}, \"spec\": {\"containers\": [{\"name\": \"c\", \"resources\": {\"limits\": {\"memory\": \"12Mi\"}}}]}}\n" +
				"{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"b\"},\n \"spec\": {\"containers\": [{\"name\": \"c\", \"resources\": {\"limits\": {\"memory\": \"2000\"}}}]}}\n",
			want: []string{
				"f.yaml:3: pod default/b: memory limit 2000 bytes",
				"f.yaml:3: pod default/b, container c: memory limit 2000 bytes",
			},
		},
		"a typed List and a runtime class mapped to a handler": {
			in: "apiVersion: v1\nkind: PodList\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: vm}\n  spec:\n    runtimeClassName: kata\n    containers:\n    - name: c\n      resources: {limits: {memory: 32Mi}}\n",
			want: []string{
				"f.yaml:11: pod default/vm: memory limit 33554432 bytes (32Mi) is below the 64Mi minimum needed to start the pod sandbox",
				"f.yaml:11: pod default/vm, container c: memory limit 33554432 bytes (32Mi) is below the 64Mi minimum needed to start a container",
			},
		},
		"exempt namespace, skip annotation": {
			in: "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: kube-system}\nspec:\n  containers: [{name: c, resources: {limits: {memory: \"1\"}}}]\n" +
				"---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, annotations: {cri-guard.io/skip: \"true\"}}\nspec:\n  containers: [{name: c, resources: {limits: {memory: \"1\"}}}]\n",
		},
		"a bad quantity is a finding, and the next document is still read": {
			in: "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers: [{name: c, resources: {limits: {memory: 12MB}}}]\n---\n" +
				"apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec:\n  containers: [{name: c, resources: {limits: {memory: 8Mi}}}]\n",
			want: []string{
				"f.yaml:1: pod default/a: quantities must match the regular expression",
				"f.yaml:11: pod default/b: memory limit 8388608 bytes (8Mi)",
				"f.yaml:11: pod default/b, container c: memory limit 8388608 bytes (8Mi)",
			},
		},
		"YAML that does not parse": {
			in: "apiVersion: v1\nkind: Pod\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: [}\n",
			// yaml.v3 names the line before the bad value's.
			want: []string{"f.yaml:5: yaml: line 5: did not find expected node content"},
		},
		"a separator line with an unclosed value and no final newline": {
			// Found by FuzzCheck: the finding named line 2 of a 1-line input.
			in:   "--- \"",
			want: []string{"f.yaml:1: yaml: found unexpected end of stream"},
		},
		"an unclosed value ended by a lone carriage return": {
			// Found by FuzzCheck: yaml.v3 counts "\r" as a line break, and
			// named line 2 of what is one line to everyone else.
			in:   "\"00\r",
			want: []string{"f.yaml:1: yaml: line 1: found unexpected end of stream"},
		},
		"a lone carriage return above the finding": {
			// Found by FuzzCheck (a busy make test run): the finding named
			// line 5, the parser's count, of a 4-line input.
			in: "apiVersion: v1\nkind: Pod\nmetadata: {name: p,\r namespace: d}\nspec: {containers: [{name: c, resources: {limits: {memory: \"2\"}}}]}",
			want: []string{"f.yaml:4: pod d/p: memory limit 2 bytes is below the 12Mi minimum needed to start the pod sandbox",
				"f.yaml:4: pod d/p, container c: memory limit 2 bytes is below the 12Mi minimum needed to start a container"},
		},
		"empty documents": {
			in: "---\n# nothing\n---\n",
		},
	} {
		t.Run(name, func(t *testing.T) {
			var got []string
			for _, f := range testLinter().Check("f.yaml", []byte(tc.in)) {
				got = append(got, f.String())
			}
			ok := len(got) == len(tc.want)
			for i := 0; ok && i < len(got); i++ {
				ok = strings.HasPrefix(got[i], tc.want[i])
			}
			if !ok {
				t.Errorf("got\n  %s\nwant (prefixes)\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// TestFindingJSON: the fields of a finding for -o json.
func TestFindingJSON(t *testing.T) {
	got := testLinter().Check("f.yaml", []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns}\nspec:\n  containers: [{name: c, resources: {limits: {memory: \"2000\"}}}]\n"))
	want := []Finding{
		{File: "f.yaml", Line: 5, Kind: "Pod", Namespace: "ns", Name: "p", Reason: policy.ReasonSandboxBelow, Limit: 2000, Floor: 12 * policy.MiB,
			Message: "pod ns/p: memory limit 2000 bytes is below the 12Mi minimum needed to start the pod sandbox; a memory quantity without a unit is bytes, did you mean 2000Mi?"},
		{File: "f.yaml", Line: 5, Kind: "Pod", Namespace: "ns", Name: "p", Container: "c", Reason: policy.ReasonContainerBelow, Limit: 2000, Floor: 12 * policy.MiB,
			Message: "pod ns/p, container c: memory limit 2000 bytes is below the 12Mi minimum needed to start a container; a memory quantity without a unit is bytes, did you mean 2000Mi?"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}
