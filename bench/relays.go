package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cri-guard/cri-guard/internal/sysio"
	"github.com/cri-guard/cri-guard/pkg/config"
	"github.com/cri-guard/cri-guard/pkg/facts"
	"github.com/cri-guard/cri-guard/pkg/guard"
	"github.com/cri-guard/cri-guard/pkg/proxy"
)

// runChild serves one relay kind on listen, forwarding to upstream (a
// socket path), and answers footprint queries on ctl. It runs in a child
// process so that its CPU and memory are its own.
func runChild(kind, listen, upstream, ctl, cgroupRoot string) error {
	l, err := net.Listen("unix", listen)
	if err != nil {
		return err
	}
	c, err := net.Listen("unix", ctl)
	if err != nil {
		return err
	}
	go serveCtl(c)
	if dir := os.Getenv("BENCH_PROFILE_DIR"); dir != "" {
		stop, err := profile(filepath.Join(dir, kind))
		if err != nil {
			return err
		}
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt)
		go func() {
			<-sig
			stop()
			os.Exit(0)
		}()
	}
	switch kind {
	case "splice":
		return serveSplice(l, upstream, false)
	case "splice-raw":
		return serveSplice(l, upstream, true)
	case "naive":
		return serveNaive(l, upstream)
	case "cri-guard":
		return serveGuard(l, upstream, cgroupRoot, proxy.ForwardingGRPC)
	case "cri-guard-frames":
		return serveGuard(l, upstream, cgroupRoot, proxy.ForwardingFrames)
	}
	return fmt.Errorf("unknown relay %q", kind)
}

// profile records a CPU profile until the returned function writes it and
// an allocation profile, as prefix.cpu.pprof and prefix.allocs.pprof.
func profile(prefix string) (func(), error) {
	f, err := os.Create(prefix + ".cpu.pprof")
	if err != nil {
		return nil, err
	}
	runtime.MemProfileRate = 64 << 10
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		if a, err := os.Create(prefix + ".allocs.pprof"); err == nil {
			_ = pprof.Lookup("allocs").WriteTo(a, 0)
			a.Close()
		}
	}, nil
}

// serveCtl answers every connection with one line:
// "goroutines rss-bytes peak-rss-bytes user-µs system-µs"; the peak is
// since the previous answer.
func serveCtl(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		rss, peak := memory("self")
		fmt.Fprintf(c, "%d %d %d %d %d\n", runtime.NumGoroutine(), rss, peak,
			ru.Utime.Sec*1e6+int64(ru.Utime.Usec), ru.Stime.Sec*1e6+int64(ru.Stime.Usec))
		c.Close()
	}
}

// memory returns a process's RSS and its peak RSS since the last call,
// in bytes: the peak (VmHWM) is reset through clear_refs after reading.
// Where it cannot be reset, the peak is the current RSS.
func memory(pid string) (rss, peak int64) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	if os.WriteFile("/proc/"+pid+"/clear_refs", []byte("5"), 0) != nil {
		peak = rss
	}
	return rss, peak
}

// serveSplice is the floor reference: a byte splice between two unix
// sockets, with no idea of HTTP/2 or gRPC. With raw, it copies through
// package sysio's raw system calls, as cri-guard's frames core does: the
// floor for a relay that does no work but the copy.
func serveSplice(l net.Listener, upstream string, raw bool) error {
	cp := func(dst, src net.Conn) { _, _ = io.Copy(dst, src) }
	if raw {
		cp = func(dst, src net.Conn) {
			// io.CopyBuffer: sysio's conn has no WriteTo or ReadFrom,
			// so every byte goes through buf.
			buf := make([]byte, 64<<10)
			_, _ = io.CopyBuffer(sysio.New(dst), sysio.New(src), buf)
		}
	}
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go func() {
			u, err := net.Dial("unix", upstream)
			if err != nil {
				c.Close()
				return
			}
			done := make(chan struct{})
			go func() {
				cp(u, c)
				_ = u.(*net.UnixConn).CloseWrite()
				close(done)
			}()
			cp(c, u)
			_ = c.(*net.UnixConn).CloseWrite()
			<-done
			c.Close()
			u.Close()
		}()
	}
}

// naiveFrame and naiveCodec are what most gRPC proxies do (mwitkow/grpc-proxy):
// a codec that copies raw bytes into a frame, or falls back to proto.
type naiveFrame struct{ payload []byte }

type naiveCodec struct{}

func (naiveCodec) Name() string { return "proto" }

func (naiveCodec) Marshal(v any) ([]byte, error) {
	if f, ok := v.(*naiveFrame); ok {
		return f.payload, nil
	}
	return proto.Marshal(v.(proto.Message))
}

func (naiveCodec) Unmarshal(data []byte, v any) error {
	if f, ok := v.(*naiveFrame); ok {
		f.payload = append([]byte(nil), data...)
		return nil
	}
	return proto.Unmarshal(data, v.(proto.Message))
}

// serveNaive relays every call as a stream with a goroutine per direction.
func serveNaive(l net.Listener, upstream string) error {
	conn, err := grpc.NewClient("unix://"+upstream,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(naiveCodec{}), grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		return err
	}
	desc := &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}
	s := grpc.NewServer(grpc.ForceServerCodec(naiveCodec{}), grpc.MaxRecvMsgSize(16<<20), grpc.MaxSendMsgSize(16<<20),
		grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
			method, _ := grpc.MethodFromServerStream(ss)
			md, _ := metadata.FromIncomingContext(ss.Context())
			ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ss.Context(), md.Copy()))
			defer cancel()
			cs, err := conn.NewStream(ctx, desc, method)
			if err != nil {
				return err
			}
			s2c := make(chan error, 1)
			c2s := make(chan error, 1)
			go func() { // kubelet -> runtime
				for {
					f := &naiveFrame{}
					if err := ss.RecvMsg(f); err != nil {
						if errors.Is(err, io.EOF) {
							_ = cs.CloseSend()
							c2s <- nil
						} else {
							c2s <- err
						}
						return
					}
					if err := cs.SendMsg(f); err != nil {
						c2s <- err
						return
					}
				}
			}()
			go func() { // runtime -> kubelet
				for i := 0; ; i++ {
					f := &naiveFrame{}
					if err := cs.RecvMsg(f); err != nil {
						s2c <- err
						return
					}
					if i == 0 {
						if hdr, err := cs.Header(); err == nil {
							_ = ss.SendHeader(hdr)
						}
					}
					if err := ss.SendMsg(f); err != nil {
						s2c <- err
						return
					}
				}
			}()
			for {
				select {
				case err := <-c2s:
					if err != nil {
						cancel()
						return err
					}
				case err := <-s2c:
					ss.SetTrailer(cs.Trailer())
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
			}
		}))
	return s.Serve(l)
}

// serveGuard runs pkg/proxy with the guard's interceptors, configured from
// pkg/config's defaults, as `cri-guard serve` builds it.
func serveGuard(l net.Listener, upstream, cgroupRoot, forwarding string) error {
	cfg, err := config.Resolve(config.File{Upstream: "unix://" + upstream, CgroupRoot: cgroupRoot})
	if err != nil {
		return err
	}
	g, err := guard.New(guard.Options{Policy: &cfg.Policy, Facts: facts.Reader{Root: cfg.CgroupRoot}})
	if err != nil {
		return err
	}
	p, err := proxy.NewCore(forwarding, cfg.Upstream, proxy.WithMaxMsgSize(cfg.MaxMessageSize), proxy.WithInterceptors(g.Interceptors()...))
	if err != nil {
		return err
	}
	g.SetRuntime(runtimeapi.NewRuntimeServiceClient(p.Conn()))
	return p.Serve(l)
}
