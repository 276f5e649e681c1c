package verifier

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeClient returns a function giving the cluster client: given, or
// built on first use from path, $KUBECONFIG or the in-cluster
// configuration. A verifier without a cluster runs fine until a job or
// workload metric needs one; that measurement then errors.
func kubeClient(given kubernetes.Interface, path string) func() (kubernetes.Interface, error) {
	if given != nil {
		return func() (kubernetes.Interface, error) { return given, nil }
	}
	return sync.OnceValues(func() (kubernetes.Interface, error) {
		if path == "" {
			path = os.Getenv("KUBECONFIG")
		}
		var rc *rest.Config
		var err error
		if path != "" {
			rc, err = clientcmd.BuildConfigFromFlags("", path)
		} else {
			rc, err = rest.InClusterConfig()
			if errors.Is(err, rest.ErrNotInCluster) {
				err = errors.New("no cluster configured (set CARAVAN_KUBECONFIG or KUBECONFIG, or run in a pod)")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("kubernetes config: %w", err)
		}
		return kubernetes.NewForConfig(rc)
	})
}
