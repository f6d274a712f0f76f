package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// statusReport is what `cri-guard status --json` prints.
type statusReport struct {
	// Daemon is the daemon's own /status, from the metrics listener.
	Daemon      *daemonStatus `json:"daemon,omitempty"`
	DaemonError string        `json:"daemonError,omitempty"`
	// Socket is the CRI Version answered through cri-guard's socket.
	Socket      string       `json:"socket"`
	Runtime     *runtimeInfo `json:"runtime,omitempty"`
	SocketError string       `json:"socketError,omitempty"`
}

// statusCmd asks a running daemon how it is. It reads the same configuration
// as serve (file and flags) to find the daemon: the daemon's /status on
// metricsListen, if set, gives its version, config digest and upstream
// state; a CRI Version call through listen shows the runtime answers
// through cri-guard. Either failing is an error.
func statusCmd(ctx context.Context, args []string) error {
	flags := newConfigFlags("status")
	timeout := flags.fs.Duration("timeout", 5*time.Second, "how long to wait for each answer")
	asJSON := flags.fs.Bool("json", false, "print JSON")
	cfg, err := flags.parse(args)
	if err != nil {
		return err
	}
	rep := statusReport{Socket: cfg.Listen}
	var errs []error
	if cfg.MetricsListen != "" {
		d, err := fetchStatus(ctx, cfg.MetricsListen, *timeout)
		if err != nil {
			rep.DaemonError = err.Error()
			errs = append(errs, err)
		}
		rep.Daemon = d
	}
	ri, err := versionThrough(ctx, cfg.Listen, *timeout)
	if err != nil {
		rep.SocketError = err.Error()
		errs = append(errs, err)
	}
	rep.Runtime = ri
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printStatus(os.Stdout, rep, cfg.MetricsListen)
	}
	return errors.Join(errs...)
}

func fetchStatus(ctx context.Context, addr string, timeout time.Duration) (*daemonStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := "http://" + addr + "/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("status %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("status %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s: %s", url, resp.Status)
	}
	var d daemonStatus
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, fmt.Errorf("status %s: %w", url, err)
	}
	return &d, nil
}

func versionThrough(ctx context.Context, endpoint string, timeout time.Duration) (*runtimeInfo, error) {
	cc, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", endpoint, err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := runtimeapi.NewRuntimeServiceClient(cc).Version(ctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return nil, fmt.Errorf("CRI Version through %s: %w", endpoint, err)
	}
	return &runtimeInfo{Name: v.GetRuntimeName(), Version: v.GetRuntimeVersion(), APIVersion: v.GetRuntimeApiVersion()}, nil
}

func printStatus(w io.Writer, r statusReport, metricsListen string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	switch {
	case metricsListen == "":
		fmt.Fprintf(tw, "daemon:\tunknown (no metricsListen configured; set it to see version, config digest and upstream state)\n")
	case r.Daemon == nil:
		fmt.Fprintf(tw, "daemon:\tunreachable: %s\n", r.DaemonError)
	default:
		d := r.Daemon
		fmt.Fprintf(tw, "daemon:\tcri-guard %s (commit %s, cri-api %s), pid %d, up %s\n", d.Version, d.Commit, d.CRIAPI, d.PID,
			time.Since(d.Started).Round(time.Second))
		fmt.Fprintf(tw, "config digest:\t%s\n", d.ConfigDigest)
		fmt.Fprintf(tw, "mode:\t%s\n", d.Mode)
		fmt.Fprintf(tw, "upstream:\t%s (%s)\n", d.Upstream, d.UpstreamState)
		if d.Runtime != nil {
			fmt.Fprintf(tw, "runtime:\t%s %s (CRI %s)\n", d.Runtime.Name, d.Runtime.Version, d.Runtime.APIVersion)
		} else {
			fmt.Fprintf(tw, "runtime:\tnot answering: %s\n", d.RuntimeError)
		}
	}
	if r.Runtime != nil {
		fmt.Fprintf(tw, "socket:\t%s: %s %s answers through cri-guard\n", r.Socket, r.Runtime.Name, r.Runtime.Version)
	} else {
		fmt.Fprintf(tw, "socket:\t%s: %s\n", r.Socket, r.SocketError)
	}
}
