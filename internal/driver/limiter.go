package driver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// errThrottleWait marks a request that never went out because its context ended while it
// waited out the vault's throttling (its Retry-After or the pacing after it): the vault's
// throttling, not a slow answer, is why.
var errThrottleWait = errors.New("the vault is throttling; waiting out its Retry-After and pacing outlasted the deadline")

// Key Vault's documented limit on secret transactions: 4,000 per 10 s per vault
// (learn.microsoft.com/azure/key-vault/general/service-limits; 429s do not count). A
// limiter starts from it, as a token bucket of 4,000 refilled at 400 a second, so a start
// within it never waits for the bucket.
const (
	documentedBurst = 4000
	documentedRate  = 400.0 // per second
)

const (
	// startWindow is a new limiter's concurrency window (at most its max). It grows by one
	// for every two successes, TCP's slow start at half speed, so that a burst larger than
	// the vault takes is not all in flight when the vault runs out: each request then in
	// flight is refused and waits out a whole-second Retry-After. Wider starts are faster
	// against a vault at Key Vault's limit, but against a small bucket they hold more
	// requests than the vault can serve at once when they are due again (measured with 32
	// and 64: some were refused twice, a second more).
	startWindow = 16
	// minSamples is how many accepted requests between two 429s measure the vault's rate.
	minSamples = 6
	// headroom is the share of a measured rate the limiter paces at: a 429 costs its
	// request a whole second, a slightly slower pace next to nothing.
	headroom = 0.92
	// overSend is how far above what the vault can have refilled a search paces, so that
	// the vault's bucket stays empty and the 429s that end a measurement keep coming.
	overSend = 1.15
	// searchFloor bounds how slow a search gets, in starts a second.
	searchFloor = 1.0
	// crowdShare: a search that sees the vault accept under this share of its requests
	// (of at least crowdSeen) is one of many clients of the vault, not alone.
	crowdShare = 1.0 / 16
	crowdSeen  = 8
	// calm is how long a vault must go without a 429 for the limiter to return to the
	// documented limit (Key Vault counts transactions over 10 s): once idle, or at once
	// when it is one of many.
	calm = 10 * time.Second
	// settle is how long a search may take before a measurement from fewer samples is
	// taken (a vault shared by many gives each little).
	settle = 2 * time.Second
	// gentle is how long the pace holds after a measurement before it probes for more,
	// doubling each second, to find rate a neighbour has given up.
	gentle = 2 * time.Second
	// sampleLog bounds the start times remembered for a measurement: those of a burst's
	// accepted requests (to size the bucket) and of a search's.
	sampleLog = 128
	// minRate bounds how slow pacing gets: a start every 10 s.
	minRate = 0.1
)

type phase int

const (
	open   phase = iota // the documented limit: no 429 for calm
	search              // a 429 came: pacing, measuring the vault's rate
	paced               // pacing at a measured rate
	crowd               // the vault gives this client little: AIMD with pauses
)

// limiter paces the requests to one vault. It models the vault as Key Vault limits it, a
// token bucket, learns the bucket's rate and capacity from the vault's answers, and paces
// the starts to fit; a concurrency window bounds the requests in flight.
//
// It starts open, at the documented limit, so requests within it never wait for the
// bucket; only the window, from startWindow in slow start, spreads a large burst over a
// few round trips.
//
// The first 429 shows the vault's bucket empty: the limiter searches. It paces the starts,
// no bursts, from the rate the vault accepted the burst at (at most the documented one),
// and on each later 429 lowers the pace to overSend times the most the vault can have
// refilled since, so that its bucket stays empty and 429s keep coming; with no 429 for two
// round trips the pace doubles every four, as slow start. Once minSamples accepted
// requests lie between two 429s, the vault's rate is measured: a token bucket that ran
// empty hands out a token every 1/rate, so the accepted requests' start times line up at
// that spacing (the median of their pairwise slopes, Theil and Sen's estimator, kept
// within what counting them allows given the arrivals' jitter). The limiter then paces at
// headroom times that, holds it for gentle, then probes for more (additive increase); a
// later 429 measures again from the last measurement, or, with too few samples, slows the
// pace to three quarters (multiplicative decrease, as CUBIC's). The measurement also sizes
// the bucket from the burst that ran it out, so after an idle spell the limiter sends that
// many at once. After calm without a 429 it is open again.
//
// Only the request the vault refused waits out its Retry-After (waitOut); the others keep
// their paced starts, so a whole-second Retry-After costs the refused requests a second,
// not every request of the vault. And since the batch ends no sooner than the refused
// requests are due again, the others need not hurry: while some are held, the starts are
// spread over the time until the first of them is due, the held ones counted in (gap). The
// others are then done early, the vault idles long enough to save what the held ones need,
// and the first burst's 429s stay the only ones. If the vault kept up with that pace (no
// 429 to a request spread out), the held ones go at once when due, as many as the burst
// showed the vault's bucket surely holds (capacityAtLeast), the rest at the pace the vault
// kept up with, and only once they have gone does the pace probe for more. A vault slower
// than the spreading needs answers 429 to it, and the search above takes over.
//
// Unless the search shows the vault accepting next to nothing of this client's requests,
// and accepting no more of its burst than it refused: then it is one of many sharing the
// vault (a fleet's replicas), and its other requests would be refused too. (Alone, a slow
// vault shows as low a share while the search over-sends; but it accepts a bucketful of
// the burst first.) It holds them all for the Retry-After and paces as TCP's congestion
// control would (crowd): resume at what the vault gave over the burst and the pause, grow
// by one start a second per success (slow start) up to half the pace last refused, a
// tenth of that a second above; the window halves on each 429 and widens by one a
// window's worth of successes. Each 429 pauses again and resumes at what the vault gave
// since. Two seconds without a 429 and the pace doubles every second: the others may be
// done, and the last of a fleet must not trickle while the vault idles. Behaviour is per
// vault: each has a limiter of its own.
//
// A limiter owns no goroutine: waiting requests sleep on timers in their own goroutines,
// and its lock is never held while one waits or while a request is in flight.
type limiter struct {
	mu       sync.Mutex
	max      int
	limit    int // the concurrency window
	grow     int // successes toward widening it
	inflight int
	waiters  []chan struct{}
	pacer    bool // a request sleeps until the next token; the others queue behind it

	// The model of the vault's token bucket.
	phase   phase
	base    float64   // search and paced: starts a second, as set at decided
	decided time.Time // when base was last set
	ceiling float64   // the fastest the pace grows to
	burst   float64   // the bucket's capacity
	tokens  float64
	stamp   time.Time // tokens as of stamp

	// What the vault's answers showed.
	busy      time.Time   // open: when the current busy spell began
	okStarts  []time.Time // open, search: start times of the burst's accepted requests
	mark      time.Time   // when the last 429 that counted arrived
	anchor    time.Time   // a moment the vault's bucket was empty: measurements run from it
	anchorOK  int         // accepted requests started since anchor
	empty     time.Time   // search: when the request that met the first 429 started
	from      time.Time   // search: when the first request refused since anchor started
	samples   []time.Time // search: start times of accepted requests started since from
	refused   time.Time   // search: the latest start of a refused request since from
	refusedAt time.Time   // search: when the last 429 arrived
	refusedN  int         // search: requests started since from that were refused
	paused    time.Time   // crowd: no start before this
	busyOK    int         // accepted requests started since busy (crowd: since since)
	since     time.Time   // crowd: when counting busyOK began
	resume    bool        // crowd: the next start sets the pace from busyOK since since
	ssthresh  float64     // crowd: above it, the pace grows slowly
	due       time.Time   // when the first of the refused requests waiting may be sent again
	started   time.Time   // the last start
	held      int         // refused requests waiting out their Retry-After
	burstNo   int         // search: requests of the burst the vault refused
	proven    float64     // search: the pace the vault kept up with while they waited
	tight     bool        // search: the starts meanwhile went at the vault's pace, not slower
	spread    time.Time   // search: the first start spread out while they waited
	allowance float64     // requests that may start at once from what the vault saved
	srtt      time.Duration
	rttvar    time.Duration // the round trip's mean deviation: how much arrivals jitter
}

func newLimiter(max int) *limiter {
	if max < 1 {
		max = 1
	}
	return &limiter{max: max, limit: min(max, startWindow), burst: documentedBurst, tokens: documentedBurst,
		ceiling: documentedRate}
}

// gap is the least time between two starts at now: while a refused request waits out its
// Retry-After, the batch ends no sooner than it is due again, so the requests waiting
// meanwhile need only be spread over the time until then. Going slower than the vault
// keeps the last 429 the first burst's, so nothing waits a second time. One of many (crowd),
// the limiter pauses for the Retry-After instead.
func (l *limiter) gap(now time.Time) time.Duration {
	if l.phase == open || l.phase == crowd || !now.Before(l.due) {
		return 0
	}
	// The refused requests count too: the vault has to serve them when they are due, from
	// what it saved meanwhile, so the others go early enough to leave it that much.
	backlog := len(l.waiters) + l.held + 1 // and the request asking
	// At most a second apart: a long Retry-After is not a reason to hold a lone request long.
	return min(l.due.Sub(now)/time.Duration(backlog), time.Second)
}

// rate is the pace at now, in starts a second.
func (l *limiter) rate(now time.Time) float64 {
	switch l.phase {
	case open:
		return documentedRate
	case crowd:
		// Two seconds without a 429 after a pause: the others may be done. Double every
		// second, so that the last of a fleet does not trickle while the vault idles.
		if quiet := now.Sub(later(l.paused, l.mark)) - 2*time.Second; quiet > 0 && !l.paused.IsZero() {
			return min(documentedRate, l.base*math.Exp2(quiet.Seconds()))
		}
		return l.base
	case search:
		// No 429 for two round trips: the pace may be below the vault's rate. Double it
		// every four, as slow start does, so that the search finds it.
		quiet := now.Sub(later(l.decided, l.refusedAt)) - 2*l.srtt
		if quiet <= 0 || l.srtt <= 0 {
			return l.base
		}
		return min(l.ceiling, l.base*math.Exp2(quiet.Seconds()/(4*l.srtt).Seconds()))
	}
	g := 1.0
	if x := now.Sub(l.decided); x > gentle {
		g = math.Exp2((x - gentle).Seconds())
	}
	return min(l.ceiling, l.base*g)
}

// advanceLocked lets the held requests go when due, opens the limiter again after calm,
// and refills the bucket.
func (l *limiter) advanceLocked(now time.Time) {
	if l.phase == search && !l.due.IsZero() && !now.Before(l.due) && (l.proven > 0 || l.tight) {
		if !l.tight {
			// The held requests are due, and the vault kept up with the pace the others were
			// spread at, which left it idle for as long as it takes to serve them at that
			// pace: it saved up to its capacity meanwhile. Serve them from that, then at the
			// pace, and grow from it.
			l.refillLocked(l.due)
			// No probing for more before they have gone: a 429 now would cost a second.
			l.base, l.decided = l.proven, l.due.Add(time.Duration(float64(l.held)/l.proven*float64(time.Second)))
			l.allowance = min(l.capacityAtLeast(), float64(l.held))
		}
		l.proven, l.tight, l.spread = 0, false, time.Time{}
	}
	if l.phase != open && now.Sub(l.mark) > calm && (l.phase == crowd || l.inflight == 0 && len(l.waiters) == 0) {
		l.refillLocked(now)
		l.phase = open
		l.burst, l.ceiling = documentedBurst, documentedRate
		l.busy, l.busyOK, l.okStarts, l.samples = now, 0, l.okStarts[:0], nil
	}
	l.refillLocked(now)
}

func (l *limiter) refillLocked(now time.Time) {
	if el := now.Sub(l.stamp); el > 0 {
		l.tokens = min(l.burst, l.tokens+el.Seconds()*l.rate(l.stamp))
	}
	l.stamp = now
}

// acquire waits for a slot and returns the request's start time, for release. It returns
// ctx.Err() if ctx ends first, wrapped in errThrottleWait if it ended while the request
// waited for its paced start.
func (l *limiter) acquire(ctx context.Context) (time.Time, error) {
	pacer := false
	for {
		l.mu.Lock()
		if pacer {
			l.pacer, pacer = false, false
		}
		now := time.Now()
		l.advanceLocked(now)
		g := l.gap(now)
		switch {
		case l.inflight >= l.limit || l.pacer:
			// Queue below.
		case (l.tokens >= 1 || l.allowance >= 1) && !now.Before(l.paused) && now.Sub(l.started) >= g:
			if g > 0 && l.phase == search {
				if l.spread.IsZero() {
					l.spread = now
				}
				if p := float64(time.Second) / float64(g); p <= l.rate(now) {
					l.proven = p
				} else {
					l.tight = true // the vault's pace, not the spreading, set the starts: nothing saved
				}
			}
			l.startLocked(now)
			l.mu.Unlock()
			return now, nil
		default:
			// Sleep until the next token; whoever comes meanwhile queues behind.
			wait := time.Duration(max(0, 1-l.tokens) / l.rate(now) * float64(time.Second))
			wait = max(wait, l.paused.Sub(now), l.started.Add(g).Sub(now))
			wait = max(wait, time.Microsecond)
			pacer, l.pacer = true, true
			l.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-t.C:
				continue // the pace may have changed meanwhile
			case <-ctx.Done():
				t.Stop()
				l.mu.Lock()
				l.pacer = false
				l.wakeLocked() // pass the turn on
				l.mu.Unlock()
				return time.Time{}, fmt.Errorf("%w: %w", errThrottleWait, ctx.Err())
			}
		}
		ch := make(chan struct{})
		l.waiters = append(l.waiters, ch)
		l.mu.Unlock()
		select {
		case <-ch:
			// Woken: loop to take the slot or become the pacer.
		case <-ctx.Done():
			l.mu.Lock()
			l.dropWaiter(ch)
			l.mu.Unlock()
			return time.Time{}, ctx.Err()
		}
	}
}

// startLocked takes a slot and a token for a request starting now.
func (l *limiter) startLocked(now time.Time) {
	if l.phase == open && l.inflight == 0 && len(l.waiters) == 0 {
		l.busy, l.busyOK, l.okStarts = now, 0, l.okStarts[:0] // a new burst: remember what the vault accepts of it
	}
	if l.phase == crowd && l.resume {
		// Resume at the rate the vault gave over the last burst and the pause after it.
		l.base = max(minRate, float64(max(l.busyOK, 1))/max(now.Sub(l.since), time.Millisecond).Seconds())
		l.since, l.busyOK, l.resume = now, 0, false
	}
	l.inflight++
	if l.allowance >= 1 {
		l.allowance--
	} else {
		l.tokens--
	}
	l.started = now
	l.wakeLocked() // the next in line starts too, or becomes the pacer
}

// dropWaiter removes ch; if it was already woken, the wake-up passes to the next waiter.
func (l *limiter) dropWaiter(ch chan struct{}) {
	for i, w := range l.waiters {
		if w == ch {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			return
		}
	}
	l.wakeLocked()
}

// release frees the slot of the request started at start. throttled reports a 429 and
// retryAfter what it asked for.
func (l *limiter) release(start time.Time, throttled bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight--
	now := time.Now()
	l.advanceLocked(now)
	if rtt := now.Sub(start); l.srtt == 0 {
		l.srtt, l.rttvar = rtt, rtt/2
	} else {
		l.rttvar += (max(l.srtt-rtt, rtt-l.srtt) - l.rttvar) / 4
		l.srtt += (rtt - l.srtt) / 8
	}
	switch {
	case !throttled:
		l.acceptedLocked(now, start)
	case retryAfter > 0:
		if !now.Before(l.due) {
			l.due = now.Add(retryAfter) // the first of them is due then
		}
		l.refusedLocked(now, start, retryAfter)
	}
	// A 429 that asks for no wait (the Azure source reads a missing Retry-After as 1 s; only
	// a fake asks for none) is retried at once, and teaches nothing.
	if l.phase == search {
		l.measureLocked(now)
	}
	l.wakeLocked()
}

func (l *limiter) acceptedLocked(now, start time.Time) {
	if l.limit < l.max {
		// Slow start at half speed; one of many, a request a window's worth of successes
		// (additive increase, as TCP's congestion avoidance).
		every := 2
		if l.phase == crowd {
			every = l.limit
		}
		if l.grow++; l.grow >= every {
			l.limit, l.grow = l.limit+1, 0
		}
	}
	if !start.Before(l.busy) {
		l.busyOK++
	}
	switch {
	case l.phase == crowd && !start.Before(l.mark):
		// As TCP's congestion control, in starts a second: slow start below ssthresh, a
		// tenth of it a second above; a second without a 429 after the pause starts over.
		if now.Sub(l.paused) > time.Second {
			l.ssthresh = math.Inf(1)
		}
		if l.base < l.ssthresh {
			l.base++
		} else {
			l.base += max(l.ssthresh, 10) / (10 * l.base)
		}
	case l.phase == open && !start.Before(l.busy) || l.phase == search && !start.After(l.empty) && !start.Before(l.busy):
		// Part of the burst that ran the bucket out (or, open, may yet), answered before
		// the first 429 or after: remember it to size the bucket.
		l.okStarts = remember(l.okStarts, start)
	case l.phase == search:
		if !l.from.IsZero() && start.After(l.from) {
			l.samples = remember(l.samples, start)
		}
	case l.phase == paced && !start.Before(l.anchor):
		l.anchorOK++
	}
}

// remember appends t to s, keeping the last sampleLog.
func remember(s []time.Time, t time.Time) []time.Time {
	if len(s) == sampleLog {
		s = append(s[:0], s[1:]...)
	}
	return append(s, t)
}

// refusedLocked learns from a 429 of a request started at start, arriving now: the
// vault's bucket was empty when it arrived.
func (l *limiter) refusedLocked(now, start time.Time, retryAfter time.Duration) {
	if l.phase == search {
		l.refusedAt = now
		if !l.spread.IsZero() && !start.Before(l.spread) {
			// Spread out and refused all the same: what the vault saved is unknown.
			l.proven, l.tight, l.allowance = 0, true, 0
		}
	}
	if l.phase == search && !start.Before(l.anchor) {
		// Refused: the bucket was empty when this one arrived. Requests started after it
		// arrived after it (give or take the jitter), so what the vault gave them it
		// refilled since: measure from the first such moment to the latest.
		if l.from.IsZero() {
			l.from, l.samples, l.refusedN = start, nil, 0
		}
		if start.After(l.refused) {
			l.refused = start
		}
		if start.After(l.from) {
			l.refusedN++
		}
		if !start.After(l.empty) {
			l.burstNo++
		}
		// A lone client of a slow vault sees its share fall as low while it searches; what
		// tells many sharing the vault apart is the burst: the vault refused as much of it
		// as it accepted, where alone it accepts a bucketful first.
		if n, f := float64(l.count(now)), float64(l.refusedN); n+f >= crowdSeen && n < crowdShare*f && len(l.okStarts) <= l.burstNo {
			// The vault accepts next to nothing of this client's requests: many share it
			// (a fleet's replicas). Its other requests would meet the same: hold them all
			// for the Retry-After, then pace at what the vault gave over the burst and
			// the pause, and probe for more as TCP does.
			l.phase, l.paused, l.resume, l.since, l.mark = crowd, now.Add(retryAfter), true, l.busy, now
			l.ssthresh, l.burst, l.tokens = math.Inf(1), 1, 0
			return
		}
	}
	if start.Before(l.mark) {
		return // started before the last 429 that counted arrived: the same overload
	}
	l.mark, l.tokens = now, 0
	switch l.phase {
	case open:
		// The vault accepted this much of the burst: its capacity plus what it refilled
		// meanwhile. Search from that rate, at most the documented one; if the burst's
		// first answers were 429s, nothing is known yet: from the documented rate, which
		// the search lowers soon enough.
		n, d := float64(len(l.okStarts)), start.Sub(l.busy)
		r := documentedRate
		if n >= 2 {
			r = n / max(d, l.srtt, time.Millisecond).Seconds()
		}
		l.phase, l.empty, l.anchor, l.burstNo = search, start, now, 1
		l.from, l.refused, l.samples = time.Time{}, time.Time{}, nil
		l.limit = max(1, l.limit/2)
		l.base, l.ceiling, l.burst, l.decided = min(max(r, minRate), documentedRate), documentedRate, 1, now
	case search:
		// The vault refilled at most n+slack tokens since from: pace a little above
		// that, so that its bucket stays empty and 429s keep coming, but never faster
		// than now.
		d := start.Sub(l.from)
		if l.from.IsZero() || d <= 0 || d < l.srtt {
			break
		}
		n := float64(l.count(start))
		l.base = max(searchFloor, min(l.rate(now), overSend*(n+l.slack(n/d.Seconds()))/d.Seconds()))
		l.decided = now
	case crowd:
		// Pause for the Retry-After, resume at what the vault gave since the last resume;
		// slow start ends at half the pace it refused. The window halves too, so that a
		// return to the documented limit after calm starts from a few requests, not a
		// burst of all those waiting into a vault others still share.
		l.ssthresh = l.base / 2
		l.limit = max(1, l.limit/2)
		l.paused, l.resume = now.Add(retryAfter), true
	case paced:
		// Refused while paced below a measured rate: the vault has less to give (a
		// neighbour took more). Measure again if enough were accepted since the last
		// measurement, both moments the bucket was empty; else slow down, as CUBIC does,
		// and let the samples add up.
		d, n := start.Sub(l.anchor), float64(l.anchorOK)
		// anchor is when the last measurement's 429 arrived, a round trip after the
		// bucket was empty: the vault refilled that much more.
		r := n / max(d, time.Millisecond).Seconds()
		if slack := l.slack(r) + r*l.srtt.Seconds(); n >= float64(minSamples) && n >= 4*slack && d > 0 {
			// Never below half the pace: one measurement does not undo the last.
			rate := l.rate(now)
			l.pace(now, max((n-slack)/d.Seconds(), rate/2/headroom))
		} else {
			l.base = max(minRate, 0.75*l.rate(now))
		}
		l.decided = now
	}
}

// count counts the samples started before t.
func (l *limiter) count(t time.Time) int {
	n := 0
	for _, s := range l.samples {
		if s.Before(t) {
			n++
		}
	}
	return n
}

// slack is how many tokens a count of accepted requests between two moments the vault
// was empty may be off by, at rate: one, and what the vault refills over the jitter of
// the arrivals.
func (l *limiter) slack(rate float64) float64 {
	return 1 + rate*2*l.rttvar.Seconds()
}

// measureLocked ends a search once enough accepted requests lie between the first 429
// and a later one: a token bucket that ran empty hands out a token every 1/rate, so their
// start times line up at that spacing.
func (l *limiter) measureLocked(now time.Time) {
	d := l.refused.Sub(l.from)
	if l.from.IsZero() || d <= 0 {
		return
	}
	var ok []time.Time
	for _, s := range l.samples {
		if s.Before(l.refused) {
			ok = append(ok, s)
		}
	}
	n := float64(len(ok))
	// Counting them bounds the rate, give or take the slack.
	slack := l.slack(n / d.Seconds())
	if len(ok) < minSamples && (now.Sub(l.mark) < settle || n < 2) {
		return
	}
	lo, hi := max(n-slack, n/2)/d.Seconds(), n/d.Seconds()
	measured := lo
	if len(ok) >= minSamples {
		// The median of the pairwise slopes of the start times against 0, 1, 2, ...
		// (Theil and Sen's estimator, which a few bunched starts do not sway): 1/rate.
		slices.SortFunc(ok, func(a, b time.Time) int { return a.Compare(b) })
		var slopes []float64
		for i := range ok {
			for j := i + 1; j < len(ok); j++ {
				slopes = append(slopes, ok[j].Sub(ok[i]).Seconds()/float64(j-i))
			}
		}
		slices.Sort(slopes)
		if m := slopes[len(slopes)/2]; m > 0 {
			measured = min(max(1/m, lo), hi)
		}
	}
	l.pace(now, measured)
	// The vault's bucket is empty and the search's last requests are on their way: start
	// pacing after they have arrived and the bucket has gathered what jitter may bunch up.
	l.tokens = 1 - slack - l.base*l.srtt.Seconds()
}

// pace paces at headroom times measured, starting now; the first time, it also sizes the
// vault's bucket from the burst that ran it out.
func (l *limiter) pace(now time.Time, measured float64) {
	if l.phase == search {
		l.burst = max(1, 0.75*l.capacity(measured))
		l.okStarts = nil
	}
	l.phase, l.mark = paced, now // what was started before paced at another rate
	l.base, l.decided = max(minRate, headroom*measured), now
	l.ceiling = max(documentedRate, measured)
	l.anchor, l.anchorOK, l.samples = now, 0, nil
}

// capacity estimates the vault's bucket capacity from the burst that ran it out, given its
// rate: the requests the vault accepted of those started in any spell before it ran out,
// less what it refilled over the spell, are at most its capacity, and about it for the
// spell from when the burst outran the rate (a first request may have gone alone).
func (l *limiter) capacity(rate float64) float64 {
	starts := slices.Clone(l.okStarts)
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	n := 0
	best := 0.0
	for i := len(starts) - 1; i >= 0; i-- {
		if !starts[i].After(l.empty) {
			n++
			best = max(best, float64(n)-rate*l.empty.Sub(starts[i]).Seconds())
		}
	}
	return best
}

// capacityAtLeast is what the vault's bucket surely holds, from the burst that ran it out:
// the requests it accepted of those started within any spell, less what it can have
// refilled over the spell and the arrivals' jitter at the documented rate, the most any
// vault refills. A full bucket lets that many go at once, as when the requests a 429 held
// for its Retry-After are due together.
func (l *limiter) capacityAtLeast() float64 {
	starts := slices.Clone(l.okStarts)
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	best := 1.0
	for i := range starts {
		for j := i; j < len(starts) && !starts[j].After(l.empty); j++ {
			spell := starts[j].Sub(starts[i]) + 2*l.rttvar
			best = max(best, float64(j-i+1)-documentedRate*spell.Seconds())
		}
	}
	return math.Floor(best)
}

// wakeLocked wakes as many waiters as there are free slots and tokens, or one to become
// the pacer; none while a pacer sleeps.
func (l *limiter) wakeLocked() {
	if l.pacer {
		return
	}
	n := min(l.limit-l.inflight, max(1, int(l.tokens+l.allowance)))
	for ; n > 0 && len(l.waiters) > 0; n-- {
		close(l.waiters[0])
		l.waiters = l.waiters[1:]
	}
}

// waitOut waits d, the Retry-After the vault gave a request it refused, before that request
// is sent again: Key Vault asks it of the refused request. The vault's other requests are
// not held: they are paced, leaving the vault room for the held ones when they are due. It
// fails with errThrottleWait if ctx ends first.
func (l *limiter) waitOut(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	l.mu.Lock()
	l.held++
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.held--
		l.mu.Unlock()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", errThrottleWait, ctx.Err())
	}
}

// window returns the concurrency window.
func (l *limiter) window() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limit
}

// paceNow returns the paced rate in starts a second, 0 when open (the documented limit
// applies).
func (l *limiter) paceNow() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.advanceLocked(now)
	if l.phase == open {
		return 0
	}
	return l.rate(now)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
