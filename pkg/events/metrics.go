package events

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts published and handled events. A nil *Metrics records
// nothing.
type Metrics struct {
	pubCount     *prometheus.CounterVec
	pubTime      *prometheus.HistogramVec
	handleCount  *prometheus.CounterVec
	handleTime   *prometheus.HistogramVec
	redeliveries *prometheus.CounterVec
	deadletters  *prometheus.CounterVec
}

// NewMetrics registers the event metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		pubCount: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caravan_events_published_total", Help: "Events published, by type and result.",
		}, []string{"type", "result"}),
		pubTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "caravan_events_publish_duration_seconds", Help: "Time to publish an event, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"type"}),
		handleCount: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caravan_events_handled_total", Help: "Deliveries handled, by consumer, type and result (ack, retry, deadletter).",
		}, []string{"consumer", "type", "result"}),
		handleTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "caravan_events_handle_duration_seconds", Help: "Time a handler took.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"consumer"}),
		redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caravan_events_redeliveries_total", Help: "Deliveries that were not the first of their event.",
		}, []string{"consumer"}),
		deadletters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caravan_events_deadletters_total", Help: "Events recorded as dead letters.",
		}, []string{"consumer"}),
	}
	reg.MustRegister(m.pubCount, m.pubTime, m.handleCount, m.handleTime, m.redeliveries, m.deadletters)
	return m
}

func (m *Metrics) published(t Type, d time.Duration, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.pubCount.WithLabelValues(string(t), result).Inc()
	m.pubTime.WithLabelValues(string(t)).Observe(d.Seconds())
}

func (m *Metrics) handled(consumer string, t Type, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.handleCount.WithLabelValues(consumer, string(t), result).Inc()
	m.handleTime.WithLabelValues(consumer).Observe(d.Seconds())
}

func (m *Metrics) redelivered(consumer string) {
	if m != nil {
		m.redeliveries.WithLabelValues(consumer).Inc()
	}
}

func (m *Metrics) deadLettered(consumer string) {
	if m != nil {
		m.deadletters.WithLabelValues(consumer).Inc()
	}
}
