// A dynamic PersistentVolume provisioner for the test cluster's one real node: each claim of the default
// StorageClass gets a directory under -root on this machine, served to Pods as a hostPath PV, and loses it
// when the claim goes (reclaimPolicy Delete). kind ships rancher's local-path-provisioner for this job; that
// one creates directories through helper Pods (an image this sandbox cannot pull). The kubelet runs on this
// machine, so the directory can be made here.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

type hostPathProvisioner struct{ root string }

func (p *hostPathProvisioner) Provision(_ context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	if opts.PVC.Spec.Selector != nil {
		return nil, controller.ProvisioningFinished, errors.New("claims with a selector are not supported")
	}
	dir := filepath.Join(p.root, opts.PVName)
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	// Pods run as non-root (Pod Security restricted) with any uid: let all of them write, as local-path does.
	if err := os.Chmod(dir, 0o777); err != nil {
		return nil, controller.ProvisioningFinished, err
	}
	reclaim := v1.PersistentVolumeReclaimDelete
	if opts.StorageClass.ReclaimPolicy != nil {
		reclaim = *opts.StorageClass.ReclaimPolicy
	}
	hostPathType := v1.HostPathDirectory
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: opts.PVName},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: reclaim,
			AccessModes:                   opts.PVC.Spec.AccessModes,
			Capacity:                      v1.ResourceList{v1.ResourceStorage: opts.PVC.Spec.Resources.Requests[v1.ResourceStorage]},
			VolumeMode:                    opts.PVC.Spec.VolumeMode,
			PersistentVolumeSource: v1.PersistentVolumeSource{
				HostPath: &v1.HostPathVolumeSource{Path: dir, Type: &hostPathType},
			},
		},
	}, controller.ProvisioningFinished, nil
}

func (p *hostPathProvisioner) Delete(_ context.Context, pv *v1.PersistentVolume) error {
	if pv.Spec.HostPath == nil || filepath.Dir(pv.Spec.HostPath.Path) != p.root {
		return &controller.IgnoredError{Reason: fmt.Sprintf("%s is not under %s", pv.Name, p.root)}
	}
	return os.RemoveAll(pv.Spec.HostPath.Path)
}

func main() {
	klog.InitFlags(nil)
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	name := flag.String("name", "red.test/hostpath", "provisioner name, as StorageClasses name it")
	root := flag.String("root", "", "directory that holds one directory per volume")
	flag.Parse()
	if *root == "" {
		klog.Fatal("-root is required")
	}
	abs, err := filepath.Abs(*root)
	if err != nil {
		klog.Fatal(err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		klog.Fatal(err)
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(config)
	ctx := context.Background()
	pc := controller.NewProvisionController(ctx, client, *name, &hostPathProvisioner{root: abs},
		controller.LeaderElection(false))
	klog.Infof("provisioning %s volumes under %s", *name, abs)
	pc.Run(ctx)
}
