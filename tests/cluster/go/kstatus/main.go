// Command kstatus prints the status that Flux (and kpt, cli-utils' apply) computes for one Kubernetes
// object: the object as JSON on stdin; the status (Current, InProgress, Failed, ...) on the first line of
// stdout and kstatus' message on the second.
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin", err)
	}
	// Unstructured's own decoder keeps JSON integers int64, as kstatus' generation checks require.
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil {
		fail("decoding the object", err)
	}
	result, err := status.Compute(obj)
	if err != nil {
		fail("computing the status", err)
	}
	fmt.Printf("%s\n%s\n", result.Status, result.Message)
}

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "kstatus: %s: %v\n", what, err)
	os.Exit(1)
}
