package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/caravan-cd/caravan/pkg/audit"
	"github.com/caravan-cd/caravan/pkg/events"
	"github.com/caravan-cd/caravan/pkg/service"
)

func (a *app) newSetup() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "setup",
		Short: "Declare Caravan's JetStream streams and KV buckets on the NATS of CARAVAN_NATS_URL",
		Long: `Declare the event stream, the audit stream and every KV bucket on the NATS
server or cluster of CARAVAN_NATS_URL, with CARAVAN_JS_REPLICAS replicas, the
CARAVAN_EVENTS_* limits and CARAVAN_AUDIT_MAX_AGE; idempotent. The services
declare nothing: they check this layout at start, wait while it is missing
and refuse other replicas. The Helm chart runs it as a Job. While the cluster
is still forming (no JetStream leader, too few peers) it retries until
--timeout.`,
		Args: args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var c service.Common
			if err := service.Load(&c); err != nil {
				return usageError{err}
			}
			if err := c.Validate(); err != nil {
				return usageError{err}
			}
			if c.URL == "" {
				return usageError{errors.New("CARAVAN_NATS_URL: required by caravan setup")}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			nc, err := events.Connect(ctx, c.NATSConfig, "caravan-setup")
			if err != nil {
				return err
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return fmt.Errorf("jetstream: %w", err)
			}
			wait := 250 * time.Millisecond
			for {
				// Each attempt has its own deadline: a request sent before
				// the cluster elected its leader gets no answer, and would
				// otherwise wait for the whole --timeout.
				actx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := service.Setup(actx, js, c)
				cancel()
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					return fmt.Errorf("setup: %w", err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "JetStream not ready (%v); retrying in %s\n", err, wait)
				select {
				case <-ctx.Done():
					return fmt.Errorf("setup: %w", err)
				case <-time.After(wait):
				}
				wait = min(2*wait, 5*time.Second)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "streams %s, %s and the KV buckets declared with %d replica(s)\n", events.StreamEvents, audit.Stream, c.Replicas)
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait for the cluster")
	return cmd
}
