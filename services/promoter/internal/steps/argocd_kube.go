package steps

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
)

// applicationsGVR is Argo CD's Application resource.
var applicationsGVR = schema.GroupVersionResource{Group: "argoproj.io", Version: "v1alpha1", Resource: "applications"}

// KubeApplications reaches Applications through a client-go dynamic
// client.
func KubeApplications(c dynamic.Interface) Applications { return kubeApps{c: c} }

type kubeApps struct{ c dynamic.Interface }

func (k kubeApps) Get(ctx context.Context, namespace, name string) (map[string]any, error) {
	u, err := k.c.Resource(applicationsGVR).Namespace(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return u.Object, nil
}

func (k kubeApps) List(ctx context.Context, namespace, selector string) ([]map[string]any, error) {
	list, err := k.c.Resource(applicationsGVR).Namespace(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	apps := make([]map[string]any, 0, len(list.Items))
	for _, u := range list.Items {
		apps = append(apps, u.Object)
	}
	return apps, nil
}

func (k kubeApps) Update(ctx context.Context, namespace string, app map[string]any) error {
	_, err := k.c.Resource(applicationsGVR).Namespace(namespace).Update(ctx, &unstructured.Unstructured{Object: app}, metav1.UpdateOptions{})
	return err
}
