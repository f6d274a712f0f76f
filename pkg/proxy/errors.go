package proxy

import (
	"errors"

	"github.com/cri-guard/cri-guard/pkg/proxy/h2"
)

var (
	// ErrServerClosed is returned by Serve after Shutdown or Close.
	ErrServerClosed = h2.ErrServerClosed

	// ErrSocketInUse is returned by Listen when a live process already
	// serves the socket.
	ErrSocketInUse = errors.New("socket is in use by a live server")
)
