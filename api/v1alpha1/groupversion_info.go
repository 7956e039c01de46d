// Package v1alpha1 contains the MeterrAPIKey API.
// +kubebuilder:object:generate=true
// +groupName=auth.meterr.ai
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of the API.
	GroupVersion = schema.GroupVersion{Group: "auth.meterr.ai", Version: "v1alpha1"}

	// SchemeBuilder registers the API's types alone; Scheme (scheme.go)
	// adds them to client-go's built-in types.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &MeterrAPIKey{}, &MeterrAPIKeyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
