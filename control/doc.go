// Package control decides how big Quartet's stages should be and which
// requests to admit, from what the stages measure. It is decision logic
// only: fed one sample per period, it returns a decision, keeps a little
// state between samples, and starts no goroutine. The runtime samples the
// stages, calls it, and applies what it decides (runtime/tuning.go);
// the tests feed it synthetic workloads.
//
// # The processor pool (Pool)
//
// Every period (DefaultPeriod, 100 ms; the runtime stretches it up to a
// second while no request comes for the processors) the pool controller
// gets the requests admitted, finished and shed, their total queue wait
// and their total time holding a place (time parked on a slow client
// excluded: it needs no place), and the places busy and requests queued
// now. From them:
//
//	λ = admitted / period        S = time holding a place / finished (smoothed)
//	W = queue wait / finished    R = max(λ(W + S), queued + busy now)
//	target = R + β√R             β = 2
//
// R is Little's law: the arrivals keep λ(W+S) requests in the pool on
// average, waiting or running, and that many places would serve them
// without waiting. That holds when places are what the queue waited for:
// every place busy at the sample, or the places held on average (time
// held / period) within β√ of the size. When places stayed free while
// requests waited, the wait was for the CPUs to run the workers
// (handlers that compute, on CPUs shared with the loops), which more
// places do not shorten, and R = λS, the places the arrivals keep
// running; or μS, when more than that drains (admission control refusing
// every arrival while a backlog admitted earlier runs down: those places
// are not idle). The β√R spare places are the square-root staffing rule
// (Halfin and Whitt, 1981): with Poisson arrivals, R + β√R servers keep
// the chance that a request waits at all near [1 + βΦ(β)/φ(β)]⁻¹, 3% for
// β = 2, whatever the load, so the headroom grows with the load but more
// slowly than it. The pool grows towards the target (at most ×4 a period,
// so a pool of 4 reaches a thousand places in four periods), and retires
// places once every target of the last DefaultRetireAfter (2 s) was below
// its size, down to the largest of them. When every place is taken by a
// request that has not finished and others queue, the law has no service
// time to go by and the pool doubles (CauseStalled). Not while the
// process's CPUs are full with as many handlers running as there are
// CPUs and too few finishing to judge a step (PoolSample.CPUFull): the
// handlers may be what fills the CPUs, and more of them at once would
// only share them (and the loops' share with them).
//
// Changes smaller than an eighth of the size are not made: the targets of
// consecutive periods wander by about that much, and following them would
// start and stop goroutines (and log) for nothing.
//
// More places only help handlers that block. For handlers that compute,
// more places add no throughput, only longer service times: the CPUs are
// the queue then, and it is invisible from the pool. So each growth step
// is judged once 20 requests have finished after it, against the period
// before it: if the places in use (time held / time, Little) grew and the
// throughput grew by less than half as much on a log scale, the step is
// undone down to throughput × old service time places (Little again),
// which becomes a ceiling until DefaultProbeAfter (2 s), or until the
// service time at the ceiling halves or doubles (the workload changed),
// when growth is tried again. A probe that finds the ceiling again goes
// back to it, and the next waits twice as long (up to 32 s): a first
// ceiling may have been found while something else had the CPUs for a
// moment, and is soon tried again; a confirmed one is left alone.
//
// # Admission (Admission)
//
// A request is admitted while fewer requests of its class wait than
// target × μ, μ being the rate at which the class's queue drains: by
// Little's law, a queue longer than that makes a new request wait longer
// than the target. μ is the class's places over its service time, its
// places being its fair share among the classes with work, or what the
// others leave it (processors take from the class that holds the fewest
// places), and the pool's places those it can grow to within the target
// when its controller is on and the last backlog waited for places, not
// CPU (a burst the pool grows to serve is not refused). The check in the
// request path compares two integers; the estimating is done here once
// per period. Two corrections are made at the door
// (stages.ClassQueue.Admit): a class whose queue was seen empty within
// half the target is admitted beyond its limit, up to twice it (its
// requests leave fast; the limit is a period old), and a class whose
// requests have not finished yet is limited by a guess (the runtime's:
// 10 ms each). The estimate is
// then held to the target by feedback, as in SEDA's overload controller:
// a period in which more than 1% of a class's requests waited past half
// the target cuts its limit to 3/4, a period with none gives 5% back, up
// to the estimate (Limit.Gain). Refused
// requests get 503 with a Retry-After of the time the class's queue needs
// to drain (at least the target, at most MaxRetryAfter), and connections
// stay open.
//
// DefaultQueueWaitTarget is 500 ms: long enough that an ordinary burst is
// queued, not refused (100 to 1000 times a typical service time), and
// well under the second after which people notice a page is slow; a
// request that would wait longer is better told at once to come back.
//
// # Reader and writer loops (Loops)
//
// An event loop is a queue in front of one goroutine: while it works, the
// events and hand-offs that arrive wait. Its busy fraction (wall time
// less time parked in the poller, stages.Loop.Busy) is the utilisation
// of that queue, and the loop-count controller keeps it moderate: when
// the stage's loops were busier than GrowAbove (75%) on average, the
// stage gets ceil(work / Aim) loops (work being the sum of their busy
// fractions, Aim 50%), at least one more and at most twice as many,
// even when the CPUs are full (a loop is a serial stage: see LoopConfig).
// A loop goes when one fewer would have been less than 40% busy for 3 s, one at
// a time; after each change, a second for the connections to move and the
// fractions to settle. Bounded by GOMAXPROCS by default: more loops than
// CPUs only add wake-ups.
//
// With the process using (nearly) every CPU it may, a busy fraction
// includes time spent waiting for a CPU, and says little about whether
// another loop helps: the processors need the same CPUs. There the
// change is tried and judged by what it did to the requests served
// (LoopSample.Served, 2 s before against 2 s after a second's settling),
// the growth check of the pool's controller applied to loops. A loop
// added that serves less than 3% more goes again, and the stage stays
// at that size for 30 s. And a stage whose loops read as neither busy
// nor quiet is probed: one loop is removed, and put back if the stage
// then serves 3% less, each lost probe doubling the wait before the next
// (3 s up to a minute), as a flap does. A change that serves clearly
// less (9%, three times that 3%, over half a second) is undone at once
// rather than after the full 2 s: a lost probe of /hello's second reader
// costs about a third of the requests while it lasts. A change is
// judged only against a steady stretch (its two halves within 15%), and
// a growth undone is checked once more back at the old size: if the
// stage does not serve there what it did before either, the workload
// changed under the trial (/hello turning to /sleep?ms=1 cuts the rate
// by a third whatever the loops do), and the ceiling goes. The case that asked for it: on
// two cores, /sleep?ms=1 at 1,000 connections kept the two readers and
// two writers /hello had needed, at busy fractions (0.2 and 0.4 per
// loop) that can say neither way, and which count is better changed
// between two runs of the same experiment (one of each served 58k/s
// against 51k/s, then 44k/s against 61k/s): only the served rate can
// tell, and only while it is measured. One stage's change is judged at
// a time (LoopSample.Hold).
//
// # Batching (Batch)
//
// A loop takes at most a budget of hand-offs from its queue per turn
// (stages.Loop.SetDrainBudget). A large batch makes fewer turns, so fewer
// polls and wake-ups per hand-off; but every event that becomes ready
// meanwhile waits for the batch. The batching controller starts at the
// largest budget (1024); while the budget binds (turns end with hand-offs
// left), it cuts the budget in proportion when the turns' working time
// (smoothed) is longer than a target (500 µs: the latency a batch may
// add), and doubles it when they work less than half the target (a
// larger batch then takes more per wake-up and poll, and throughput
// grows); it starts from the largest again when the load halves at once.
// When fewer than 5% of the turns used the whole budget the queue empties
// every turn and the budget is not touched: at low load it adds nothing.
//
// # What was taken from whom, and what was changed
//
// SEDA (Welsh, Culler and Brewer, SOSP 2001) gives every stage a thread
// pool controller that adds a thread while the stage's queue is longer
// than a threshold and removes threads idle for a while. Taken: a
// controller per stage over its own queue, growth under queueing, idle
// retirement. Changed: the threshold and the step are replaced by
// Little's law, so the pool jumps to the size the load needs instead of
// creeping one thread per period, and a growth step that does not add
// throughput is undone (SEDA's controller would keep adding threads to a
// CPU-bound stage up to its maximum).
//
// Adaptive overload control (Welsh and Culler, USITS 2003) admits
// requests to a stage through a token bucket whose rate is cut
// multiplicatively while the 90th-percentile response time of a window of
// requests exceeds a target, raised additively otherwise, with a bucket
// per class and a quick rejection instead of a growing queue. Taken: a
// latency target, rejection at the door with an explicit answer, classes
// controlled apart. Changed: the decision is made per request from the
// queue it would join, not from the response times of requests that have
// already suffered, so there is no feedback delay of a window and no
// oscillation of an additive-increase/multiplicative-decrease rate; and the
// target bounds what is controllable here, the wait for a place, to which
// the service time is added, rather than the whole response time.
//
// Envoy's adaptive concurrency filter (gradient controller) and Netflix's
// concurrency-limits (Gradient2, Vegas) adjust a concurrency limit by the
// ratio of a baseline latency to the current one; Envoy measures its
// baseline (minRTT) by periodically cutting concurrency to a minimum, which
// costs throughput and latency while it lasts. Taken: service time that
// inflates with concurrency means a queue where it cannot be seen. Changed:
// the baseline is the service time just before our own growth step and
// the test is on the throughput that step bought, so nothing is ever
// throttled to measure, and the controller sizes the pool rather than
// refusing requests with it (admission is separate, by wait).
//
// SEDA's batching controller adjusts the events a stage's thread takes
// per iteration from the stage's output rate: down until throughput
// degrades, a little up when it does, back to the maximum on a sudden
// drop of load. Taken: the batch as the knob, starting from the largest,
// the reset on a drop of load. Changed: the signal is the loop's turn
// time against a target, the latency the batch adds to every other event
// of the loop, which an event loop (unlike a SEDA thread that serves one
// queue) has to watch; SEDA's search by throughput gradient, tried first
// here, drifted down on a shared machine (noise cut the batch by half and
// only growth of throughput won a quarter back: budgets of 12 in a run
// of bench/examples/phases.yaml); and a budget that does not bind is left
// alone, so the controller does not wander at low load.
//
// SEDA sizes thread pools; its loops are not sized at all, and no Go
// server sizes its event loops (gnet and nginx take a count at start).
// Here the loop count follows the busy fraction, Apache's spare-thread
// idea applied to loops: bounds, periodic checks, hysteresis.
//
// Apache's event MPM keeps idle threads between MinSpareThreads and
// MaxSpareThreads, checked once a second. Taken: bounds and periodic
// maintenance. Changed: idleness is measured in time (places unused for
// RetireAfter, spare goroutines idle for as long) rather than as a count
// of idle threads, which has to be tuned per workload.
package control
