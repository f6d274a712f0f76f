package apiserver

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/cel/openapi/resolver"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/cri-guard/cri-guard/internal/floorcases"
	"github.com/cri-guard/cri-guard/pkg/admission"
	"github.com/cri-guard/cri-guard/pkg/config"
)

var resources = map[string]schema.GroupVersionResource{
	"Pod":         {Version: "v1", Resource: "pods"},
	"Deployment":  {Group: "apps", Version: "v1", Resource: "deployments"},
	"ReplicaSet":  {Group: "apps", Version: "v1", Resource: "replicasets"},
	"StatefulSet": {Group: "apps", Version: "v1", Resource: "statefulsets"},
	"DaemonSet":   {Group: "apps", Version: "v1", Resource: "daemonsets"},
	"Job":         {Group: "batch", Version: "v1", Resource: "jobs"},
	"CronJob":     {Group: "batch", Version: "v1", Resource: "cronjobs"},
}

// apply creates the object in y as `kubectl apply` creates a new one (the
// last-applied annotation, kubectl's field manager), or only asks whether
// it would be created (dryRun).
func apply(ctx context.Context, dyn dynamic.Interface, y string, dryRun bool) error {
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil {
		return err
	}
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann["kubectl.kubernetes.io/last-applied-configuration"] = string(j)
	u.SetAnnotations(ann)
	opts := metav1.CreateOptions{FieldManager: "kubectl-client-side-apply"}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = dyn.Resource(resources[u.GetKind()]).Namespace(u.GetNamespace()).Create(ctx, u, opts)
	return err
}

const denied = "ValidatingAdmissionPolicy '" + admission.DefaultName + "' with binding '" + admission.DefaultName + "' denied request: "
const warned = "Validation failed for ValidatingAdmissionPolicy '" + admission.DefaultName + "' with binding '" + admission.DefaultName + "': "

func caseNamed(t *testing.T, name string) floorcases.Case {
	for _, c := range floorcases.Cases {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no case %q", name)
	return floorcases.Case{}
}

// TestAdmissionPolicy: the policy generated from a node configuration,
// applied to a real kube-apiserver, refuses a Deployment of "2000" with the
// node's words, admits 2000Mi, the exempt namespace and the skip
// annotation, warns and admits in Warn mode, and says of every case of the
// shared table what the node and the linter say.
func TestAdmissionPolicy(t *testing.T) {
	apiserverBin, etcdBin := os.Getenv("CRI_GUARD_KUBE_APISERVER"), os.Getenv("CRI_GUARD_ETCD")
	if apiserverBin == "" || etcdBin == "" {
		t.Skip("CRI_GUARD_KUBE_APISERVER and CRI_GUARD_ETCD name no binaries (make test-apiserver builds and sets them)")
	}
	c := startCluster(t, apiserverBin, etcdBin)
	ctx := context.Background()
	dyn, err := dynamic.NewForConfig(c.config)
	if err != nil {
		t.Fatal(err)
	}

	// What the cases need: their namespaces, with the default service
	// account that the ServiceAccount admission plugin looks up (no
	// controller manager runs to make it), and their RuntimeClasses.
	for _, ns := range []string{"team-a", "batch-system", "kube-system"} {
		if ns != "kube-system" {
			if _, err := c.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, rc := range floorcases.RuntimeClasses {
		o := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: rc.Name}, Handler: rc.Handler}
		if rc.OverheadMemory != "" {
			o.Overhead = &nodev1.Overhead{PodFixed: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(rc.OverheadMemory)}}
		}
		if _, err := c.client.NodeV1().RuntimeClasses().Create(ctx, o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// The policy, from the node's configuration file.
	f, err := config.Parse([]byte(floorcases.Config))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Resolve(f)
	if err != nil {
		t.Fatal(err)
	}
	vap, binding := admission.Generate(&cfg.Policy, admission.Options{})
	if _, err := c.client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, vap, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the policy: %v", err)
	}
	if _, err := c.client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create the binding: %v", err)
	}
	// What the controller manager's policy status controller would write
	// to status.typeChecking (no controller manager runs here): the
	// expressions checked against this API server's schemas of every kind
	// the policy matches.
	tc := &validating.TypeChecker{
		SchemaResolver: &resolver.ClientDiscoveryResolver{Discovery: c.client.Discovery()},
		RestMapper:     restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.client.Discovery())),
	}
	if w := tc.Check(vap); len(w) > 0 {
		t.Errorf("type checking warns: %+v", w)
	} else {
		t.Logf("type checking against the server's schemas: no warnings")
	}
	probe := caseNamed(t, "2000 without a unit")
	waitFor(t, "the policy to refuse the probe pod", func() bool {
		err := apply(ctx, dyn, probe.YAML, true)
		return err != nil && strings.Contains(err.Error(), denied)
	})

	t.Run("the shared table", func(t *testing.T) {
		for _, tc := range floorcases.Cases {
			t.Run(tc.Name, func(t *testing.T) {
				err := apply(ctx, dyn, tc.YAML, true)
				switch {
				case len(tc.Want) == 0 && err != nil:
					t.Fatalf("refused: %v", err)
				case len(tc.Want) == 0:
				case err == nil:
					t.Fatalf("admitted; want %s", tc.Want[0])
				case !strings.HasSuffix(err.Error(), denied+tc.Want[0]):
					t.Fatalf("got  %v\nwant ...%s%s", err, denied, tc.Want[0])
				}
			})
		}
	})

	deploy := caseNamed(t, "Deployment of 2000 bytes")
	t.Run("Deny: a Deployment of 2000 bytes is refused with the node's words", func(t *testing.T) {
		err := apply(ctx, dyn, deploy.YAML, false)
		want := `deployments.apps "web" is forbidden: ` + denied + deploy.Want[0]
		if err == nil || err.Error() != want {
			t.Fatalf("got  %v\nwant %s", err, want)
		}
		t.Logf("kubectl apply would print: Error from server (Forbidden): error when creating \"deploy.yaml\": %v", err)
	})
	t.Run("a Deployment of 2000Mi is created", func(t *testing.T) {
		if err := apply(ctx, dyn, caseNamed(t, "Deployment of 2000Mi").YAML, false); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("an exempt namespace", func(t *testing.T) {
		y := strings.ReplaceAll(deploy.YAML, "namespace: team-a", "namespace: kube-system")
		if err := apply(ctx, dyn, y, false); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("the skip annotation", func(t *testing.T) {
		y := strings.ReplaceAll(caseNamed(t, "Deployment whose template skips").YAML, "name: web\n", "name: web-skip\n")
		if err := apply(ctx, dyn, y, false); err != nil {
			t.Fatal(err)
		}
	})
	// Warn: the audit step of a rollout. The Deployment of 2000Mi goes,
	// so that the one of 2000 bytes can be created under its name.
	if err := c.client.AppsV1().Deployments("team-a").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := c.client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx, binding.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.Spec.ValidationActions = []admissionv1.ValidationAction{admissionv1.Warn}
	if _, err := c.client.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Update(ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the binding to warn", func() bool {
		c.warnings.take()
		return apply(ctx, dyn, probe.YAML, true) == nil
	})
	t.Run("Warn: a Deployment of 2000 bytes is created, with the words as a warning", func(t *testing.T) {
		c.warnings.take()
		if err := apply(ctx, dyn, deploy.YAML, false); err != nil {
			t.Fatal(err)
		}
		got := c.warnings.take()
		want := []string{warned + deploy.Want[0]}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("warnings\n  %q\nwant\n  %q", got, want)
		}
		t.Logf("kubectl apply would print: Warning: %s", got[0])
		d, err := c.client.AppsV1().Deployments("team-a").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		j, _ := json.Marshal(d.Spec.Template.Spec.Containers[0].Resources.Limits)
		if string(j) != `{"memory":"2k"}` {
			t.Fatalf("stored limits %s", j)
		}
	})
}

// waitFor polls until cond holds; the deadline is a hang guard only.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	began := time.Now()
	for !cond() {
		if time.Since(began) > 2*time.Minute {
			t.Fatalf("waited %s for %s", time.Since(began).Round(time.Second), what)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("waited %s for %s", time.Since(began).Round(time.Millisecond), what)
}
