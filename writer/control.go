package writer

import "github.com/quartet-server/quartet/stages"

// What the runtime's controllers read and set on a writer loop while it
// serves. Removing a writer loop needs nothing of the loop itself: the
// runtime stops handing it responses, waits until none it was handed is
// still with a processor, and Stops it (Run returns once the responses it
// has are written).

// ID is the loop's index in its stage (what stages.Conn.Writer names).
func (l *Loop) ID() int { return l.id }

// Counts is what the loop has done since it started: busy time, turns,
// responses taken (stages.Loop.Counts). Any goroutine.
func (l *Loop) Counts() stages.LoopCounts { return l.core.Counts() }

// SetDrainBudget bounds how many kicked responses the loop takes per turn
// (stages.Loop.SetDrainBudget). Any goroutine.
func (l *Loop) SetDrainBudget(n int) { l.core.SetDrainBudget(n) }
