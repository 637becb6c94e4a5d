package manager

import "testing"

func TestNamespaces(t *testing.T) {
	if got := namespaces(""); got != nil {
		t.Errorf(`namespaces("") = %v, want nil (every namespace)`, got)
	}
	got := namespaces(" im-prod,,im-staging ,im-prod")
	if len(got) != 2 {
		t.Errorf("namespaces = %v, want im-prod and im-staging", got)
	}
	for _, ns := range []string{"im-prod", "im-staging"} {
		if _, ok := got[ns]; !ok {
			t.Errorf("namespaces = %v, lacks %s", got, ns)
		}
	}
}
