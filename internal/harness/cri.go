package harness

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CRIClient is a connection to a CRI endpoint with both service clients.
type CRIClient struct {
	Conn    *grpc.ClientConn
	Runtime runtimeapi.RuntimeServiceClient
	Image   runtimeapi.ImageServiceClient
}

// DialCRI connects to a CRI endpoint such as "unix:///path/to/sock". The
// connection is lazy: use WaitForCRI to know that the server answers.
func DialCRI(endpoint string) (*CRIClient, error) {
	conn, err := grpc.NewClient(endpoint,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)),
		// Reconnect quickly: servers here start (and restart) within
		// milliseconds, and the default 1 s first backoff slows every start.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("dial CRI %s: %w", endpoint, err)
	}
	return &CRIClient{
		Conn:    conn,
		Runtime: runtimeapi.NewRuntimeServiceClient(conn),
		Image:   runtimeapi.NewImageServiceClient(conn),
	}, nil
}

// Close closes the connection.
func (c *CRIClient) Close() error {
	if c == nil || c.Conn == nil {
		return nil
	}
	return c.Conn.Close()
}

// WaitForCRI calls Version until it succeeds, ctx is done, or exited (may
// be nil) is closed, which signals that the server process has gone.
func WaitForCRI(ctx context.Context, c *CRIClient, exited <-chan struct{}) (*runtimeapi.VersionResponse, error) {
	var lastErr error
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		v, err := c.Runtime.Version(callCtx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			return v, nil
		}
		if status.Code(err) == codes.Unimplemented {
			// The server is up but has no CRI service (for containerd: the
			// CRI plugin failed to load). Waiting will not help.
			return nil, fmt.Errorf("waiting for CRI Version: %w", err)
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for CRI Version: %w (last error: %v)", ctx.Err(), lastErr)
		case <-exited:
			return nil, errors.New("waiting for CRI Version: server process exited")
		case <-tick.C:
		}
	}
}
