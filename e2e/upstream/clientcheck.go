package main

// clientCheck drives a tenant's API (docs/tenant-routes.md) with client-go's
// typed clientset speaking protobuf, the default of Go tools and
// controllers: namespaces created, found, labelled, watched as a
// watch-list and deleted; ConfigMaps deleted as a collection; the self
// reviews. It prints one line per step and exits non-zero at the first
// that does not behave as on kube-apiserver. The e2e suite runs it.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

type check struct {
	ctx       context.Context
	client    *kubernetes.Clientset
	namespace string
	tenant    string
}

func runClientCheck(args []string) int {
	flags := flag.NewFlagSet("client-check", flag.ContinueOnError)
	kubeconfig := flags.String("kubeconfig", "", "a kubeconfig whose server is a tenant's route")
	namespace := flags.String("namespace", "client-go", "the tenant namespace to create, use and delete")
	tenant := flags.String("tenant", "", "the tenant: no name it is shown may carry its storage prefix")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeconfig:", err)
		return 2
	}
	config.ContentType = "application/vnd.kubernetes.protobuf"
	config.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := check{ctx: ctx, client: kubernetes.NewForConfigOrDie(config), namespace: *namespace, tenant: *tenant}
	for _, step := range []struct {
		name string
		run  func() error
	}{
		{"namespace created", c.createNamespace},
		{"namespace found by metadata.name", c.findNamespace},
		{"namespace labelled", c.labelNamespace},
		{"watch-list of namespaces ends its initial events", c.watchList},
		{"configmaps deleted as a collection", c.deleteCollection},
		{"can-i answers yes and no", c.accessReviews},
		{"whoami answers the user", c.whoami},
		{"namespace deleted", c.deleteNamespace},
	} {
		if err := step.run(); err != nil {
			fmt.Printf("FAIL %s: %v\n", step.name, err)
			return 1
		}
		fmt.Printf("ok %s\n", step.name)
	}
	return 0
}

func (c check) createNamespace() error {
	namespace := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: c.namespace}}
	created, err := c.client.CoreV1().Namespaces().Create(c.ctx, namespace, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	if created.Name != c.namespace {
		return fmt.Errorf("created as %q", created.Name)
	}
	return nil
}

func (c check) findNamespace() error {
	list, err := c.client.CoreV1().Namespaces().List(c.ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + c.namespace})
	if err != nil {
		return err
	}
	if len(list.Items) != 1 || list.Items[0].Name != c.namespace {
		return fmt.Errorf("found %d namespaces", len(list.Items))
	}
	if name := list.Items[0].Labels["kubernetes.io/metadata.name"]; name != c.namespace {
		return fmt.Errorf("kubernetes.io/metadata.name is %q", name)
	}
	return nil
}

func (c check) labelNamespace() error {
	patch := []byte(`{"metadata":{"labels":{"team":"go"}}}`)
	patched, err := c.client.CoreV1().Namespaces().Patch(c.ctx, c.namespace, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return err
	}
	if patched.Labels["team"] != "go" {
		return fmt.Errorf("labels %v", patched.Labels)
	}
	list, err := c.client.CoreV1().Namespaces().List(c.ctx, metav1.ListOptions{LabelSelector: "team=go"})
	if err != nil {
		return err
	}
	if len(list.Items) != 1 {
		return fmt.Errorf("selecting team=go found %d", len(list.Items))
	}
	return nil
}

// watchList is what client-go's reflectors do when WatchListClient is on:
// a watch that streams the current state, then a bookmark marking its end.
func (c check) watchList() error {
	yes := true
	watcher, err := c.client.CoreV1().Namespaces().Watch(c.ctx, metav1.ListOptions{
		SendInitialEvents:    &yes,
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
		AllowWatchBookmarks:  true,
	})
	if err != nil {
		return err
	}
	defer watcher.Stop()
	seen := map[string]bool{}
	for event := range watcher.ResultChan() {
		switch event.Type {
		case watch.Added:
			seen[event.Object.(*corev1.Namespace).Name] = true
		case watch.Bookmark:
			annotations := event.Object.(*corev1.Namespace).Annotations
			if annotations[metav1.InitialEventsAnnotationKey] != "true" {
				continue
			}
			if !seen[c.namespace] || !seen["default"] {
				return fmt.Errorf("initial events ended without %s and default: %v", c.namespace, seen)
			}
			for name := range seen {
				if strings.HasPrefix(name, c.tenant+"--") {
					return fmt.Errorf("a storage name leaked: %s", name)
				}
			}
			return nil
		case watch.Error:
			return apierrors.FromObject(event.Object)
		}
	}
	return fmt.Errorf("the watch ended before its initial events did (saw %v)", seen)
}

func (c check) deleteCollection() error {
	configMaps := c.client.CoreV1().ConfigMaps(c.namespace)
	for i := range 3 {
		object := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Name:   fmt.Sprintf("batch-%d", i),
			Labels: map[string]string{"batch": "go"},
		}}
		if _, err := configMaps.Create(c.ctx, object, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	selector := metav1.ListOptions{LabelSelector: "batch=go"}
	if err := configMaps.DeleteCollection(c.ctx, metav1.DeleteOptions{}, selector); err != nil {
		return err
	}
	left, err := configMaps.List(c.ctx, selector)
	if err != nil {
		return err
	}
	if len(left.Items) != 0 {
		return fmt.Errorf("%d left", len(left.Items))
	}
	return nil
}

func (c check) accessReviews() error {
	for _, question := range []struct {
		attributes authorizationv1.ResourceAttributes
		want       bool
	}{
		{authorizationv1.ResourceAttributes{Namespace: c.namespace, Verb: "create", Resource: "configmaps"}, true},
		{authorizationv1.ResourceAttributes{Verb: "get", Resource: "nodes"}, false},
	} {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &question.attributes,
		}}
		answer, err := c.client.AuthorizationV1().SelfSubjectAccessReviews().Create(c.ctx, review, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		if answer.Status.Allowed != question.want {
			return fmt.Errorf("%s %s in %q: allowed %v (%s)", question.attributes.Verb,
				question.attributes.Resource, question.attributes.Namespace, answer.Status.Allowed, answer.Status.Reason)
		}
	}
	rules, err := c.client.AuthorizationV1().SelfSubjectRulesReviews().Create(c.ctx,
		&authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: c.namespace}},
		metav1.CreateOptions{})
	if err != nil {
		return err
	}
	if rules.Spec.Namespace != c.namespace || len(rules.Status.ResourceRules) == 0 {
		return fmt.Errorf("rules review of %q: %d rules", rules.Spec.Namespace, len(rules.Status.ResourceRules))
	}
	return nil
}

func (c check) whoami() error {
	review, err := c.client.AuthenticationV1().SelfSubjectReviews().Create(c.ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	if review.Status.UserInfo.Username == "" {
		return fmt.Errorf("no user name")
	}
	return nil
}

func (c check) deleteNamespace() error {
	if err := c.client.CoreV1().Namespaces().Delete(c.ctx, c.namespace, metav1.DeleteOptions{}); err != nil {
		return err
	}
	for {
		_, err := c.client.CoreV1().Namespaces().Get(c.ctx, c.namespace, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-c.ctx.Done():
			return fmt.Errorf("still there: %w", c.ctx.Err())
		case <-time.After(time.Second):
		}
	}
}
