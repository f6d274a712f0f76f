package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/cri-guard/cri-guard/pkg/admission"
)

func admissionPolicyCmd(_ context.Context, args []string) error {
	cf := newConfigFlags("admission-policy")
	action := cf.fs.String("action", "Deny", "the binding's validationActions: Deny, Warn or Audit, or a list such as Warn,Audit")
	name := cf.fs.String("name", admission.DefaultName, "name of the policy and its binding")
	output := cf.fs.String("o", "yaml", "output: yaml or json (a List)")
	classes := runtimeClassFlag{}
	cf.fs.Var(classes, "runtime-class", "NAME=HANDLER: the RuntimeClass NAME runs on runtime handler HANDLER (repeatable; default: a class's handler has its name)")
	cf.fs.Usage = func() {
		fmt.Fprint(cf.fs.Output(), `usage: cri-guard admission-policy [flags] | kubectl apply -f -

Prints a ValidatingAdmissionPolicy and its binding (admissionregistration.k8s.io/v1,
Kubernetes 1.30+) that refuse at admission, in the node's words, what
cri-guard with this configuration refuses on the node.

flags:
`)
		cf.fs.PrintDefaults()
	}
	if err := cf.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if cf.fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, cf.fs.Arg(0))
	}
	actions, err := admission.ParseActions(*action)
	if err != nil {
		return fmt.Errorf("%w: --action: %v", errUsage, err)
	}
	if *output != "yaml" && *output != "json" {
		return fmt.Errorf("%w: -o %q: want yaml or json", errUsage, *output)
	}
	_, cfg, err := cf.load()
	if err != nil {
		return err
	}
	vap, binding := admission.Generate(&cfg.Policy, admission.Options{Name: *name, Actions: actions, RuntimeClasses: classes})
	return writeObjects(os.Stdout, *output, vap, binding)
}

// writeObjects prints objects as kubectl apply reads them, without the
// empty status and creationTimestamp that typed objects carry.
func writeObjects(w io.Writer, format string, objs ...runtime.Object) error {
	var maps []any
	for _, o := range objs {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return err
		}
		delete(m, "status")
		if md, ok := m["metadata"].(map[string]any); ok {
			delete(md, "creationTimestamp")
		}
		maps = append(maps, m)
	}
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"apiVersion": "v1", "kind": "List", "items": maps})
	}
	for i, m := range maps {
		b, err := yaml.Marshal(m)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(w, "---")
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}
