package main

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	pb "conveyor.example/gen/conveyorv1"
)

// nonRetryable marks an error that fails the job for good.
type nonRetryable struct{ message string }

func (e nonRetryable) Error() string { return e.message }

// handler runs one job: its result, or an error (retried unless nonRetryable). It must
// return soon after j.ctx is done.
type handler func(j *job) ([]byte, error)

// The conformance task types (docs/conformance.md), each with the contract version it
// implements ("" = every version).
var handlers = map[string]struct {
	version string
	run     handler
}{
	"conformance.echo":             {"", echo},
	"conformance.fail_once":        {"", failOnce},
	"conformance.fail_permanently": {"", failPermanently},
	"conformance.checkpoint":       {"", checkpoint},
	"conformance.sleep":            {"", sleep},
	"conformance.wait_for_cancel":  {"", waitForCancel},
	"conformance.versioned":        {versionedVersion, echo},
}

// taskTypes names every handler in a Lease, so that the coordinator hands out only jobs
// this worker can run.
func taskTypes() []*pb.TaskTypeRef {
	refs := make([]*pb.TaskTypeRef, 0, len(handlers))
	for name, h := range handlers {
		refs = append(refs, &pb.TaskTypeRef{Name: name, Version: h.version})
	}
	return refs
}

func handle(j *job) ([]byte, error) {
	h, ok := handlers[j.leased.TaskType]
	if !ok {
		// Retryable: another worker of the queue may know the task type.
		return nil, fmt.Errorf("no handler for task type %.100q in the Go worker", j.leased.TaskType)
	}
	return h.run(j)
}

func echo(j *job) ([]byte, error) { return j.leased.Payload, nil }

func failOnce(j *job) ([]byte, error) {
	if j.leased.Attempt == 1 {
		return nil, errors.New("failing the first attempt on purpose")
	}
	return []byte("ok"), nil
}

func failPermanently(j *job) ([]byte, error) {
	return nil, nonRetryable{"this task never succeeds"}
}

func checkpoint(j *job) ([]byte, error) {
	if j.leased.Attempt == 1 {
		j.saveCheckpoint([]byte("step-1"))
		return nil, errors.New("failing after the checkpoint on purpose")
	}
	return j.leased.Checkpoint, nil
}

func sleep(j *job) ([]byte, error) {
	ms, err := strconv.Atoi(string(j.leased.Payload))
	if err != nil {
		return nil, nonRetryable{"the payload is not a number of milliseconds"}
	}
	select {
	case <-time.After(time.Duration(ms) * time.Millisecond):
		return []byte("done"), nil
	case <-j.ctx.Done():
		return nil, j.ctx.Err()
	}
}

func waitForCancel(j *job) ([]byte, error) {
	<-j.ctx.Done()
	return nil, j.ctx.Err()
}
