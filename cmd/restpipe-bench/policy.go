package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The policy row of scenario b: what a --policy of 100 rules costs at
// c=64. A second node pair, the same as restpipe's but with the server
// reading policyOf100, is driven right after the pair without a policy in
// every round, and the row gives the ratio of the two throughputs. Goal:
// within noise.

// tPolicy is the target of the policy row: the second pair's client node.
const tPolicy = "restpipe+policy"

// policyGoal is the lowest ratio to the pair without a policy that counts
// as within the noise of a shared machine.
const policyGoal = 0.95

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
		goal: fmt.Sprintf("within noise: >= %.2fx", policyGoal), result: "n/a"}
	if b, ok := r.median("b.eps", tRestpipe); ok {
		rw.baseline = fmtRate(b) + " (no policy)"
	}
	if ratio, ok := r.ratio("b.eps", tPolicy, tRestpipe); ok {
		rw.ratio = fmt.Sprintf("%.2fx", ratio)
		rw.result = verdict(ratio >= policyGoal)
		var per []string
		for round := 1; round <= o.rounds; round++ {
			p, ok1 := r.vals["b.eps"][tPolicy][round]
			n, ok2 := r.vals["b.eps"][tRestpipe][round]
			if ok1 && ok2 && n > 0 {
				per = append(per, fmt.Sprintf("%.3f", p/n))
			}
		}
		line := "b. policy of 100 rules: throughput with the policy / without, per round: " + strings.Join(per, ", ")
		if pc, ok := r.median("b.cpu server node", tPolicy); ok {
			if nc, ok := r.median("b.cpu server node", tRestpipe); ok {
				line += fmt.Sprintf("; server node CPU per event %.0f µs with, %.0f µs without", pc, nc)
			}
		}
		r.notes = append(r.notes, line)
	}
	return []row{rw}
}
