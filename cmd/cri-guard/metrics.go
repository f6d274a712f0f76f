package main

import "github.com/prometheus/client_golang/prometheus"

var reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "cri_guard", Name: "config_reloads_total", Help: "Configuration reloads by result.",
}, []string{"result"})
