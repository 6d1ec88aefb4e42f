package service

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/polytropon/polytropon/ipc/wire"
	"github.com/polytropon/polytropon/libservices"
)

// metrics are the service's Prometheus metrics. The per-op observers are resolved
// once at start, so recording a request is two atomic updates and no allocation.
type metrics struct {
	reg     *prometheus.Registry
	lat     [wire.NumOps]prometheus.Observer
	errs    [wire.NumOps]prometheus.Counter
	ops     [wire.NumOps]prometheus.Counter
	clients prometheus.Gauge
}

// latencyBuckets span 250 ns to about 4 s, doubling: the direct path's cached
// operations sit at the bottom, a synced write to a slow disk near the top.
func latencyBuckets() []float64 {
	return prometheus.ExponentialBuckets(250e-9, 2, 24)
}

func newMetrics(insts []*instance) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "polytropon", Subsystem: "service", Name: "op_seconds",
		Help:    "Service-side latency of direct-path operations, from dequeue to answer.",
		Buckets: latencyBuckets(),
	}, []string{"op"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "polytropon", Subsystem: "service", Name: "op_errors_total",
		Help: "Direct-path operations answered with an error.",
	}, []string{"op"})
	ops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "polytropon", Subsystem: "service", Name: "ops_total",
		Help: "Direct-path operations served.",
	}, []string{"op"})
	m.clients = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "polytropon", Subsystem: "service", Name: "clients",
		Help: "Connected direct-path clients.",
	})
	m.reg.MustRegister(lat, errs, ops, m.clients)
	for op := wire.Op(1); int(op) < wire.NumOps; op++ {
		m.lat[op] = lat.WithLabelValues(op.String())
		m.errs[op] = errs.WithLabelValues(op.String())
		m.ops[op] = ops.WithLabelValues(op.String())
	}
	// Counters of libservices that report them (cache hits), per instance and layer.
	for _, in := range insts {
		layer := 0
		walk(in.fs, func(fs libservices.FS) {
			r, ok := fs.(libservices.CounterReporter)
			if !ok {
				return
			}
			labels := prometheus.Labels{"fs": in.name, "layer": strconv.Itoa(layer)}
			layer++
			r.Counters(func(name string, _ int64) {
				m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
					Namespace: "polytropon", Name: name,
					Help:        "Counter reported by a libservice of the instance (layer counts reporters from the top).",
					ConstLabels: labels,
				}, func() float64 { return float64(counter(r, name)) }))
			})
		})
	}
	return m
}

// counter reads one named counter of r.
func counter(r libservices.CounterReporter, name string) int64 {
	var v int64
	r.Counters(func(n string, x int64) {
		if n == name {
			v = x
		}
	})
	return v
}

// walk visits fs and every libservice below it, top first.
func walk(fs libservices.FS, fn func(fs libservices.FS)) {
	fn(fs)
	switch w := fs.(type) {
	case libservices.Wrapper:
		walk(w.Unwrap(), fn)
	case libservices.MultiWrapper:
		for _, b := range w.Unwrap() {
			walk(b, fn)
		}
	}
}

func (m *metrics) start() time.Time { return time.Now() }

func (m *metrics) done(op wire.Op, t time.Time, status int32) {
	if int(op) >= wire.NumOps || op == 0 {
		return
	}
	m.lat[op].Observe(time.Since(t).Seconds())
	m.ops[op].Inc()
	if status < 0 {
		m.errs[op].Inc()
	}
}
