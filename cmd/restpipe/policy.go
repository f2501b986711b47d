package main

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/restpipe/restpipe/host"
	"github.com/restpipe/restpipe/host/policy"
)

// The node's policy (--policy): an Enforcer in front of the route table
// for the events peers send, never for the gateway's /local/ callers. This
// file holds its wiring: loading at start, SIGHUP, /status and /metrics.

// newPolicy reads the policy file of a node whose route table is next, and
// returns the handler for its peers' events. A bad file stops the node with
// every problem in it.
func (n *node) newPolicy(file string, next host.Handler) (*policy.Enforcer, error) {
	refusals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "restpipe_policy_refusals_total",
		ConstLabels: prometheus.Labels{"role": string(n.cfg.Role), "node": n.name},
		Help:        "Events from peers this node's policy refused before any plugin saw them, by outcome: forbidden (no allow block matched; the caller got forbidden) or rate_limited (over a limit block's rate; the caller got overloaded).",
	}, []string{"outcome"})
	if err := n.metrics.Registry().Register(refusals); err != nil {
		return nil, fmt.Errorf("policy metrics: %w", err)
	}
	cfg := policy.DefaultConfig()
	cfg.File = file
	cfg.Next = next
	cfg.Logger = n.log.Named("policy")
	// Both series exist from the start, at 0.
	cfg.Observer = policyObserver{refusals.WithLabelValues(policy.OutcomeForbidden), refusals.WithLabelValues(policy.OutcomeRateLimited)}
	e, err := policy.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("--policy %s: %w", file, err)
	}
	st := e.Status()
	n.log.Info("policy loaded", "file", st.File, "sha256", st.SHA256, "allow_rules", st.AllowRules, "limit_rules", st.LimitRules)
	if st.AllowRules == 0 {
		n.log.Warn("the policy has no allow block: every event from a peer is refused", "file", st.File)
	}
	return e, nil
}

// reloadPolicy reads the policy file again (on SIGHUP). A bad file keeps
// the policy in force, and says why in the log and in /status.
func (n *node) reloadPolicy() {
	if n.policy == nil {
		return
	}
	before := n.policy.Policy()
	p, err := n.policy.Reload()
	if err != nil {
		n.log.Error("SIGHUP: keeping the current policy", "file", before.File(), "sha256", before.SHA256(), "error", err)
		return
	}
	if p == before {
		n.log.Info("SIGHUP: policy unchanged", "file", p.File(), "sha256", p.SHA256())
		return
	}
	allow, limit := p.Rules()
	n.log.Info("SIGHUP: policy reloaded", "file", p.File(), "sha256", p.SHA256(), "allow_rules", allow, "limit_rules", limit)
}

// policyStatus is the policy part of /status; nil without --policy.
func (n *node) policyStatus() *policy.Status {
	if n.policy == nil {
		return nil
	}
	st := n.policy.Status()
	return &st
}

// policyObserver counts refusals by outcome.
type policyObserver struct{ forbidden, rateLimited prometheus.Counter }

func (o policyObserver) PolicyRefused(_, _, outcome string) {
	if outcome == policy.OutcomeRateLimited {
		o.rateLimited.Inc()
	} else {
		o.forbidden.Inc()
	}
}
