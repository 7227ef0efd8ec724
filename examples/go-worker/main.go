// A Conveyor worker in Go, written from docs/protocol.md and the protos alone: the task types
// of the conformance kit (docs/conformance.md), so that `conveyor conformance` can check it.
// Build it with ./build.sh (Debian's Go packages, GOPATH mode); run it as
//
//	CONVEYOR_ADDRESS=127.0.0.1:7345 CONVEYOR_QUEUE=q ./build/conveyor-go-worker
//
// Phases: a lease loop that long-polls for as many jobs as it has free slots; one goroutine
// per job that runs the handler while a second heartbeats it; a receipt per job, retried while
// the coordinator is unreachable. SIGTERM stops leasing, lets jobs finish within the grace,
// releases the rest (OUTCOME_RELEASE) and exits 0.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	pb "conveyor.example/gen/conveyorv1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

const (
	defaultGrace       = 30 * time.Second
	defaultConcurrency = 4
	// How long one Lease call long-polls (the coordinator allows 30 s at most), and how much
	// longer the call may take before the worker gives up on it.
	leaseWait  = 20 * time.Second
	leaseSlack = 10 * time.Second
	// How long SIGTERM lets a Lease reply already on its way arrive before cancelling.
	leaseDrain = 200 * time.Millisecond
	// Lease retries back off between these after an error.
	backoffFirst = 100 * time.Millisecond
	backoffMax   = 5 * time.Second
	// A receipt is retried this long while the coordinator is unreachable.
	receiptRetryFor = 30 * time.Second
	callTimeout     = 5 * time.Second
	// Replies as large as the coordinator may send (its payload limit is far lower).
	maxMessageBytes  = 64 << 20
	versionedVersion = "1.1.0"
	cancelledType    = "conveyor.Cancelled"
	leaseMethod      = "/conveyor.v1.CoordinatorService/Lease"
)

// Why the worker stopped a job, which decides what it reports.
type stopReason int

const (
	running stopReason = iota
	cancelRequested
	leaseLost
	shutdown
)

type config struct {
	address, queue string
	grace          time.Duration
	concurrency    int
}

func configFromEnv() (config, error) {
	c := config{
		address:     os.Getenv("CONVEYOR_ADDRESS"),
		queue:       os.Getenv("CONVEYOR_QUEUE"),
		grace:       defaultGrace,
		concurrency: defaultConcurrency,
	}
	if c.address == "" || c.queue == "" {
		return c, errors.New("set CONVEYOR_ADDRESS and CONVEYOR_QUEUE")
	}
	if v := os.Getenv("CONVEYOR_SHUTDOWN_GRACE_MS"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms < 0 {
			return c, fmt.Errorf("CONVEYOR_SHUTDOWN_GRACE_MS must be milliseconds, got %.20q", v)
		}
		c.grace = time.Duration(ms) * time.Millisecond
	}
	if v := os.Getenv("CONVEYOR_CONCURRENCY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return c, fmt.Errorf("CONVEYOR_CONCURRENCY must be a positive number, got %.20q", v)
		}
		c.concurrency = n
	}
	return c, nil
}

// job is one leased job while this worker holds it.
type job struct {
	leased *pb.LeasedJob
	ctx    context.Context // done when the worker stops the job
	cancel context.CancelFunc

	mu         sync.Mutex
	reason     stopReason
	checkpoint []byte // saved by the handler, not yet sent
}

func (j *job) stop(reason stopReason) {
	j.mu.Lock()
	if j.reason == running {
		j.reason = reason
	}
	j.mu.Unlock()
	j.cancel()
}

func (j *job) stopReason() stopReason {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.reason
}

func (j *job) saveCheckpoint(b []byte) {
	j.mu.Lock()
	j.checkpoint = append([]byte{}, b...)
	j.mu.Unlock()
}

// takeCheckpoint returns the unsent checkpoint (nil if none) and forgets it.
func (j *job) takeCheckpoint() []byte {
	j.mu.Lock()
	defer j.mu.Unlock()
	b := j.checkpoint
	j.checkpoint = nil
	return b
}

type worker struct {
	cfg    config
	id     string
	conn   *grpc.ClientConn
	client pb.CoordinatorServiceClient

	mu        sync.Mutex
	running   map[string]*job // by lease token
	slotFreed chan struct{}
	jobs      sync.WaitGroup
}

func main() {
	cfg, err := configFromEnv()
	if err != nil {
		log.Fatalf("error: %v", err)
	}
	conn, err := grpc.Dial(cfg.address, grpc.WithInsecure(), grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(maxMessageBytes), grpc.MaxCallSendMsgSize(maxMessageBytes)))
	if err != nil {
		log.Fatalf("error: cannot reach %s: %v", cfg.address, err)
	}
	defer conn.Close()
	host, _ := os.Hostname()
	w := &worker{
		cfg:       cfg,
		id:        fmt.Sprintf("%s-%d-go", host, os.Getpid()),
		conn:      conn,
		client:    pb.NewCoordinatorServiceClient(conn),
		running:   map[string]*job{},
		slotFreed: make(chan struct{}, 1),
	}
	stopping, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	w.leaseLoop(stopping)
	w.finish(cfg.grace)
}

// -- lease loop ---------------------------------------------------------------------------

func (w *worker) free() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cfg.concurrency - len(w.running)
}

func (w *worker) leaseLoop(stopping context.Context) {
	backoff := backoffFirst
	for stopping.Err() == nil {
		free := w.free()
		if free <= 0 {
			select { // never ask for more than the free slots: wait for one
			case <-w.slotFreed:
			case <-stopping.Done():
			}
			continue
		}
		jobs, err := w.lease(stopping, free)
		if err != nil {
			if stopping.Err() != nil {
				return
			}
			log.Printf("lease failed (%v); retrying in %v", err, backoff)
			select {
			case <-time.After(backoff):
			case <-stopping.Done():
			}
			backoff = minDuration(2*backoff, backoffMax)
			continue
		}
		backoff = backoffFirst
		if stopping.Err() != nil {
			// The reply raced SIGTERM: hand the jobs back unstarted, uncounted.
			for _, leased := range jobs {
				w.report(&pb.ReceiptRequest{JobId: leased.JobId, LeaseToken: leased.LeaseToken,
					Outcome: pb.Outcome_OUTCOME_RELEASE})
			}
			return
		}
		for _, leased := range jobs {
			w.start(leased)
		}
	}
}

// lease long-polls for up to `free` jobs. SIGTERM cancels the call, but only after a short
// drain: cancelling a call whose reply is already on the wire loses that reply (the
// coordinator sent it; grpc-go drops it), and with it the jobs, leased to nobody until their
// lease runs out. A reply that comes within the drain is taken; the lease loop hands its
// jobs back.
func (w *worker) lease(stopping context.Context, free int) ([]*pb.LeasedJob, error) {
	ctx, cancel := context.WithTimeout(context.Background(), leaseWait+leaseSlack)
	defer cancel()
	go func() {
		select {
		case <-stopping.Done():
			select {
			case <-time.After(leaseDrain):
				cancel()
			case <-ctx.Done():
			}
		case <-ctx.Done():
		}
	}()
	request := &pb.LeaseRequest{
		WorkerId:  w.id,
		Queues:    []string{w.cfg.queue},
		MaxJobs:   int32(free),
		Wait:      durationpb.New(leaseWait),
		TaskTypes: taskTypes(),
	}
	// Invoked directly, not through the generated client, which drops the reply on error:
	// when SIGTERM cancels the call just as the reply arrives, grpc-go may decode the reply
	// and still return CANCELLED. Those jobs are leased to this worker all the same; the lease
	// loop hands them back.
	reply := &pb.LeaseResponse{}
	err := w.conn.Invoke(ctx, leaseMethod, request, reply)
	if err != nil && len(reply.Jobs) == 0 {
		return nil, err
	}
	return reply.Jobs, nil
}

func (w *worker) start(leased *pb.LeasedJob) {
	ctx, cancel := context.WithCancel(context.Background())
	j := &job{leased: leased, ctx: ctx, cancel: cancel}
	w.mu.Lock()
	w.running[leased.LeaseToken] = j
	w.mu.Unlock()
	w.jobs.Add(1)
	go w.run(j)
}

// -- one job --------------------------------------------------------------------------------

func (w *worker) run(j *job) {
	defer w.jobs.Done()
	beats := make(chan struct{})
	beaten := make(chan struct{})
	go func() { defer close(beaten); w.heartbeat(j, beats) }()
	result, err := handle(j)
	close(beats)
	<-beaten
	receipt := w.receiptFor(j, result, err)
	w.mu.Lock()
	delete(w.running, j.leased.LeaseToken)
	w.mu.Unlock()
	select { // wake the lease loop if it waits for a slot
	case w.slotFreed <- struct{}{}:
	default:
	}
	if receipt != nil {
		w.report(receipt)
	}
	j.cancel()
}

// receiptFor turns what the handler did into a receipt; nil when the lease was lost.
func (w *worker) receiptFor(j *job, result []byte, err error) *pb.ReceiptRequest {
	r := &pb.ReceiptRequest{JobId: j.leased.JobId, LeaseToken: j.leased.LeaseToken}
	switch j.stopReason() {
	case leaseLost:
		return nil // someone else owns the job now: stay silent
	case shutdown:
		r.Outcome = pb.Outcome_OUTCOME_RELEASE
		return r
	case cancelRequested:
		r.Outcome = pb.Outcome_OUTCOME_FAILURE
		r.Error = &pb.JobError{Message: "cancelled while running", Type: cancelledType}
	default:
		if err == nil {
			r.Outcome, r.Result = pb.Outcome_OUTCOME_SUCCESS, result
			return r
		}
		var permanent nonRetryable
		r.Outcome = pb.Outcome_OUTCOME_FAILURE
		r.Error = &pb.JobError{Message: err.Error(), Type: "go.error",
			NonRetryable: errors.As(err, &permanent)}
	}
	// A failed attempt's checkpoint must reach the coordinator before its receipt.
	if checkpoint := j.takeCheckpoint(); checkpoint != nil && !w.sendCheckpoint(j, checkpoint) {
		return nil
	}
	return r
}

// heartbeat extends the job's lease every third of its duration until `done` closes; it
// stops the job when the coordinator asks to cancel it or says the lease is lost.
func (w *worker) heartbeat(j *job, done <-chan struct{}) {
	lease := j.leased.LeaseDuration.AsDuration()
	if lease <= 0 {
		lease = 30 * time.Second
	}
	expires := j.leased.LeaseExpiresAt.AsTime()
	ticker := time.NewTicker(lease / 3)
	defer ticker.Stop()
	for {
		select {
		case <-done:
			return
		case <-ticker.C:
		}
		if time.Now().After(expires) {
			j.stop(leaseLost) // no heartbeat got through in time: the job may be elsewhere now
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), lease/3)
		req := &pb.HeartbeatRequest{JobId: j.leased.JobId, LeaseToken: j.leased.LeaseToken}
		reply, err := w.client.Heartbeat(ctx, req)
		cancel()
		switch {
		case status.Code(err) == codes.FailedPrecondition:
			log.Printf("lease lost on job %s; abandoning it", j.leased.JobId)
			j.stop(leaseLost)
			return
		case err != nil:
			log.Printf("heartbeat for job %s failed (%v); retrying", j.leased.JobId, status.Code(err))
		default:
			expires = reply.LeaseExpiresAt.AsTime()
			if reply.CancelRequested {
				j.stop(cancelRequested)
			}
		}
	}
}

// sendCheckpoint stores a checkpoint with a heartbeat; false when the lease is lost.
func (w *worker) sendCheckpoint(j *job, checkpoint []byte) bool {
	req := &pb.HeartbeatRequest{JobId: j.leased.JobId, LeaseToken: j.leased.LeaseToken,
		Checkpoint: checkpoint}
	err := retry(func(ctx context.Context) error {
		_, err := w.client.Heartbeat(ctx, req)
		return err
	})
	return status.Code(err) != codes.FailedPrecondition
}

// report sends a receipt, again while the coordinator is unreachable (receipts are
// idempotent per job and token).
func (w *worker) report(r *pb.ReceiptRequest) {
	err := retry(func(ctx context.Context) error {
		_, err := w.client.Receipt(ctx, r)
		return err
	})
	if err != nil {
		log.Printf("receipt for job %s not delivered: %v", r.JobId, status.Code(err))
	}
}

// retry calls `call` until it succeeds, fails for good, or receiptRetryFor passes.
func retry(call func(ctx context.Context) error) error {
	deadline := time.Now().Add(receiptRetryFor)
	backoff := backoffFirst
	for {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		err := call(ctx)
		cancel()
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown:
		default:
			return err
		}
		if time.Now().Add(backoff).After(deadline) {
			return err
		}
		time.Sleep(backoff)
		backoff = minDuration(2*backoff, 2*time.Second)
	}
}

// -- shutting down --------------------------------------------------------------------------

// finish lets running jobs end within the grace, then stops the rest (they are released)
// and waits until every receipt is sent.
func (w *worker) finish(grace time.Duration) {
	all := make(chan struct{})
	go func() { w.jobs.Wait(); close(all) }()
	select {
	case <-all:
		return
	case <-time.After(grace):
	}
	w.mu.Lock()
	for _, j := range w.running {
		j.stop(shutdown)
	}
	w.mu.Unlock()
	<-all
}

func minDuration(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}
