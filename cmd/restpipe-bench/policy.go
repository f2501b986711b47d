package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The policy row of scenario b: what a --policy of 100 rules costs at
// c=64. A second node pair, the same as restpipe's but with the server
// reading policyOf100, is driven next to the pair without a policy in
// every round (after it in odd rounds, before it in even ones, so a drift
// of the machine's load within a round favours neither), and the row gives
// the median of the per-round ratios of the two throughputs.
//
// Goal: within noise. The noise is the median absolute deviation of those
// per-round ratios (at least policyNoiseMin, and no goal below
// policyGoalMin however noisy the machine): the row passes when the median
// ratio is no further below 1 than that.

// tPolicy is the target of the policy row: the second pair's client node.
const tPolicy = "restpipe+policy"

// Bounds of the policy row's goal (see above).
const (
	policyNoiseMin = 0.02
	policyGoalMin  = 0.85
)

// policyOrder returns scenario b's targets for round: as they are in odd
// rounds; in even ones with tPolicy just before tRestpipe.
func policyOrder(targets []string, round int) []string {
	i, j := slices.Index(targets, tRestpipe), slices.Index(targets, tPolicy)
	if round%2 == 1 || i < 0 || j < 0 {
		return targets
	}
	out := slices.Delete(slices.Clone(targets), j, j+1)
	return slices.Insert(out, i, tPolicy)
}

// policyOf100 is a policy of 100 rules (90 allow and 10 limit blocks) of
// the shapes operators write, in which the bench's events (nameClient,
// get_time) match only the last allow block and the last limit block: the
// most work a decision can take.
func policyOf100() string {
	var b strings.Builder
	b.WriteString("# restpipe-bench: 100 rules; the bench's client matches only the last of each kind\n")
	for i := 0; i < 89; i++ {
		fmt.Fprintf(&b, "allow {\n  peers  = [\"team-%d-*\", \"*.site%d.example.com\", \"node%d\"]\n  routes = [\"get_team%d_*\", \"post_jobs_%d\", \"*_files%d\"]\n}\n", i, i, i, i, i, i)
	}
	fmt.Fprintf(&b, "allow {\n  peers  = [\"%s*\"]\n  routes = [\"get_*\"]\n}\n", strings.TrimRight(nameClient, "0123456789"))
	for i := 0; i < 9; i++ {
		fmt.Fprintf(&b, "limit {\n  peers = [\"team-%d-*\"]\n  rate  = \"%d/s\"\n}\n", i, 100+i)
	}
	b.WriteString("limit {\n  peers = [\"*\"]\n  rate  = \"1000000000/s\"\n  burst = 1000000\n}\n")
	return b.String()
}

// addPolicyTarget starts the policy row's node pair and adds its endpoint
// and processes, and returns scenario b's targets with tPolicy last.
func (r *runner) addPolicyTarget(ctx context.Context, targets []string, eps map[string]endpoint, procs map[string][]cpuProc) ([]string, error) {
	file := filepath.Join(r.work, "policy.hcl")
	if err := os.WriteFile(file, []byte(policyOf100()), 0o644); err != nil {
		return nil, err
	}
	srv, err := r.startServer(ctx, "server node (policy of 100 rules)", "127.0.0.1:0", "--policy", file)
	if err != nil {
		return nil, err
	}
	cl, err := r.startClient(ctx, "client node (policy of 100 rules)", nameClient, srv.link)
	if err != nil {
		return nil, err
	}
	eps[tPolicy] = endpoint{small: "http://" + cl.http + "/server/time"}
	procs[tPolicy] = []cpuProc{{"client node", cl.pid(), false}, {"server node", srv.pid(), false}}
	return append(slices.Clone(targets), tPolicy), nil
}

// policyRows is the policy row, against the pair without a policy.
func (r *results) policyRows(o *options) []row {
	if !o.want("b") {
		return nil
	}
	v, ok := r.median("b.eps", tPolicy)
	if !ok {
		return nil
	}
	rw := row{figure: "b. small GET, c=64, throughput, policy of 100 rules", measured: fmtRate(v), baseline: "—", ratio: "—",
		goal: "within noise", result: "n/a"}
	if b, ok := r.median("b.eps", tRestpipe); ok {
		rw.baseline = fmtRate(b) + " (no policy)"
	}
	var per []float64
	var perText []string
	for round := 1; round <= o.rounds; round++ {
		p, ok1 := r.vals["b.eps"][tPolicy][round]
		n, ok2 := r.vals["b.eps"][tRestpipe][round]
		if ok1 && ok2 && n > 0 {
			per = append(per, p/n)
			perText = append(perText, fmt.Sprintf("%.3f", p/n))
		}
	}
	ratio, ok := median(slices.Clone(per))
	if !ok {
		return []row{rw}
	}
	var dev []float64
	for _, x := range per {
		dev = append(dev, math.Abs(x-ratio))
	}
	noise, _ := median(dev)
	noise = max(noise, policyNoiseMin)
	goal := max(1-noise, policyGoalMin)
	rw.ratio = fmt.Sprintf("%.2fx", ratio)
	rw.goal = fmt.Sprintf("within noise: >= %.2fx", goal)
	rw.result = verdict(ratio >= goal)
	line := fmt.Sprintf("b. policy of 100 rules: throughput with the policy / without, per round: %s; noise (median absolute deviation) %.3f",
		strings.Join(perText, ", "), noise)
	if pc, ok := r.median("b.cpu server node", tPolicy); ok {
		if nc, ok := r.median("b.cpu server node", tRestpipe); ok {
			line += fmt.Sprintf("; server node CPU per event %.1f µs with, %.1f µs without", pc, nc)
		}
	}
	r.notes = append(r.notes, line)
	return []row{rw}
}
