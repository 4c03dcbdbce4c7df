package rdma

import (
	"fmt"
	"strings"
)

// Registry selects a Provider by name. It is a plain value the program
// builds (commands add the verbs provider only when built with the verbs
// tag), not a package-level table filled by init functions.
type Registry struct {
	providers []Provider
}

// NewRegistry returns a registry over ps; their order is the preference
// order of "auto" (put hardware providers before software ones).
func NewRegistry(ps ...Provider) *Registry {
	return &Registry{providers: append([]Provider(nil), ps...)}
}

// Names lists the providers in preference order.
func (r *Registry) Names() []string {
	names := make([]string, len(r.providers))
	for i, p := range r.providers {
		names[i] = p.Name()
	}
	return names
}

// Get returns the provider called name. "auto" (or "") returns the first
// provider that lists at least one device, so a host with an RDMA NIC
// uses it and any other host falls back to software iWARP.
func (r *Registry) Get(name string) (Provider, error) {
	if name == "" || name == "auto" {
		var errs []string
		for _, p := range r.providers {
			devs, err := p.Devices()
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", p.Name(), err))
				continue
			}
			if len(devs) > 0 {
				return p, nil
			}
		}
		if len(errs) > 0 {
			return nil, fmt.Errorf("%w (auto: %s)", ErrNoDevice, strings.Join(errs, "; "))
		}
		return nil, ErrNoDevice
	}
	for _, p := range r.providers {
		if p.Name() == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("%w %q (have %s)", ErrUnknownProvider, name, strings.Join(r.Names(), ", "))
}
