// Command caravan is Caravan's one binary: `caravan server` runs the whole
// system in one process on an embedded NATS server, and the other verbs are
// the command-line client.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/caravan-cd/caravan/cmd/caravan/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
