// Command incluster-check runs in a pod of a tenant and drives the API its
// in-cluster config finds (KUBERNETES_SERVICE_HOST/PORT, the service
// account's token, CA and namespace files) with client-go's typed
// clientset speaking protobuf, as operators and CI runners in a tenant
// do. It prints one line per step and exits non-zero at the first that
// does not behave as the tenant's own API should (docs/tenant-routes.md).
// The e2e suite builds it statically into an image and runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const namespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

func main() {
	config, err := rest.InClusterConfig()
	if err != nil {
		fail("in-cluster config", err)
	}
	config.ContentType = "application/vnd.kubernetes.protobuf"
	config.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	raw, err := os.ReadFile(namespaceFile)
	if err != nil {
		fail("namespace file", err)
	}
	namespace := strings.TrimSpace(string(raw))
	fmt.Printf("server %s, namespace %s\n", config.Host, namespace)
	if strings.Contains(namespace, "--") {
		fail("namespace file", fmt.Errorf("it names the storage namespace %q", namespace))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	client := kubernetes.NewForConfigOrDie(config)
	steps := []struct {
		name string
		run  func(context.Context, *kubernetes.Clientset, string) error
	}{
		{"whoami", whoami},
		{"create, list and watch ConfigMaps", configMaps},
		{"other namespaces refused", outside},
	}
	for _, step := range steps {
		if err := step.run(ctx, client, namespace); err != nil {
			fail(step.name, err)
		}
		fmt.Println("ok:", step.name)
	}
	fmt.Println("in-cluster check passed")
}

func fail(step string, err error) {
	fmt.Printf("FAILED: %s: %v\n", step, err)
	os.Exit(1)
}

func whoami(ctx context.Context, c *kubernetes.Clientset, namespace string) error {
	review, err := c.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	want := "system:serviceaccount:" + namespace + ":default"
	if got := review.Status.UserInfo.Username; got != want {
		return fmt.Errorf("the API says I am %q, not %q", got, want)
	}
	fmt.Println("  I am", review.Status.UserInfo.Username)
	return nil
}

func configMaps(ctx context.Context, c *kubernetes.Clientset, namespace string) error {
	api := c.CoreV1().ConfigMaps(namespace)
	list, err := api.List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	watcher, err := api.Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		return err
	}
	defer watcher.Stop()
	made := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "made-in-cluster"}, Data: map[string]string{"by": "incluster-check"}}
	if _, err := api.Create(ctx, made, metav1.CreateOptions{}); err != nil {
		return err
	}
	for event := range watcher.ResultChan() {
		cm, ok := event.Object.(*corev1.ConfigMap)
		if !ok || event.Type != watch.Added || cm.Name != made.Name {
			continue
		}
		if cm.Namespace != namespace {
			return fmt.Errorf("the watch shows namespace %q", cm.Namespace)
		}
		fmt.Println("  watched ADDED", cm.Name)
		break
	}
	list, err = api.List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var names []string
	for _, item := range list.Items {
		names = append(names, item.Name)
	}
	fmt.Println("  configmaps:", strings.Join(names, ","))
	return nil
}

// outside: the tenant's other namespaces are not granted to this service
// account, and storage names of any tenant name nothing in this API.
func outside(ctx context.Context, c *kubernetes.Clientset, namespace string) error {
	for _, other := range strings.Split(os.Getenv("OUTSIDE_NAMESPACES"), ",") {
		if other == "" {
			continue
		}
		_, err := c.CoreV1().ConfigMaps(other).List(ctx, metav1.ListOptions{})
		if err == nil {
			return fmt.Errorf("listing configmaps of %q was allowed", other)
		}
		if !apierrors.IsForbidden(err) && !apierrors.IsNotFound(err) {
			return fmt.Errorf("%q: %v", other, err)
		}
		fmt.Printf("  %s: %s\n", other, apierrors.ReasonForError(err))
	}
	if _, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err == nil {
		return fmt.Errorf("nodes were listed")
	}
	return nil
}
