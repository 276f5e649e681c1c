package redact

import (
	"context"
	"fmt"
	"log/slog"
)

// Handler returns a slog.Handler that redacts the message and every
// attribute (strings, errors, Stringers, and the values Value redacts) of
// each record before h handles it. Attributes given to WithAttrs are
// redacted with the values known at that call.
func (r *Redactor) Handler(h slog.Handler) slog.Handler {
	if r == nil {
		return h
	}
	return &handler{r: r, h: h}
}

// Logger returns a logger writing through Handler(l.Handler()).
func (r *Redactor) Logger(l *slog.Logger) *slog.Logger {
	if r == nil {
		return l
	}
	return slog.New(r.Handler(l.Handler()))
}

type handler struct {
	r *Redactor
	h slog.Handler
}

var _ slog.Handler = (*handler)(nil)

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	if h.r.Len() == 0 {
		return h.h.Handle(ctx, rec)
	}
	out := slog.NewRecord(rec.Time, rec.Level, h.r.String(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.h.Handle(ctx, out)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = h.attr(a)
	}
	return &handler{r: h.r, h: h.h.WithAttrs(red)}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{r: h.r, h: h.h.WithGroup(name)}
}

func (h *handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.String(v.String()))
	case slog.KindGroup:
		group := v.Group()
		out := make([]any, len(group))
		for i, g := range group {
			out[i] = h.attr(g)
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		switch t := v.Any().(type) {
		case error:
			return slog.String(a.Key, h.r.String(t.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, h.r.String(t.String()))
		case []byte:
			return slog.String(a.Key, h.r.String(string(t)))
		case string, []string, map[string]string, []any, map[string]any:
			return slog.Any(a.Key, h.r.Value(t))
		default:
			// A struct or another type: when its text holds a secret, the
			// redacted text takes its place.
			if s := fmt.Sprintf("%+v", t); h.r.Leaks(s) {
				return slog.String(a.Key, h.r.String(s))
			}
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
