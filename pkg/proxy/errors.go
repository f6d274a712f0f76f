package proxy

import "errors"

var (
	// ErrServerClosed is returned by Serve after Shutdown or Close.
	ErrServerClosed = errors.New("cri-guard: server closed")

	// ErrSocketInUse is returned by Listen when a live process already
	// serves the socket.
	ErrSocketInUse = errors.New("socket is in use by a live server")
)
