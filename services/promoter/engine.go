package promoter

import (
	"errors"
	"fmt"
	"log/slog"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/caravan-cd/caravan/pkg/freightindex"
	"github.com/caravan-cd/caravan/pkg/service"
	"github.com/caravan-cd/caravan/services/promoter/internal/engine"
)

// Result is how a promotion's run ended (the step engine's result).
type Result = engine.Result

var _ Runner = (*engine.Engine)(nil)

// newEngine returns the step engine, keeping its work dirs and git mirrors
// in the service's folder below the data dir.
func newEngine(cfg Config, env *service.Env, log *slog.Logger, kube dynamic.Interface, freight *freightindex.Index) (*engine.Engine, error) {
	finder, err := cfg.Credentials(env)
	if err != nil {
		return nil, fmt.Errorf("promoter: %w", err)
	}
	return engine.New(engine.Options{
		Credentials:       finder,
		DataDir:           cfg.Dir("promoter"),
		Store:             env.Store,
		Logger:            log.With("component", "engine"),
		Egress:            env.Egress,
		GitMirrorMaxBytes: cfg.GitMirrorMaxBytes,
		GitCacheMaxBytes:  cfg.GitCacheMaxBytes,
		UIBaseURL:         cfg.ExternalURL,
		Kube:              kube,
		ArgoCDSettle:      cfg.ArgoCDHealthSettle,
		Freight:           freight,
	})
}

// kubeClient builds the client of Argo CD Applications from a kubeconfig
// (path, else envPath), else the in-cluster configuration; nil when there
// is none. A kubeconfig that cannot be read is an error: the operator
// asked for it.
func kubeClient(path, envPath string) (dynamic.Interface, error) {
	var (
		rc  *rest.Config
		err error
	)
	switch {
	case path != "":
		if rc, err = clientcmd.BuildConfigFromFlags("", path); err != nil {
			return nil, fmt.Errorf("CARAVAN_KUBECONFIG %s: %w", path, err)
		}
	case envPath != "":
		if rc, err = clientcmd.BuildConfigFromFlags("", envPath); err != nil {
			return nil, fmt.Errorf("KUBECONFIG %s: %w", envPath, err)
		}
	default:
		rc, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("in-cluster kubernetes config: %w", err)
		}
	}
	return dynamic.NewForConfig(rc)
}
