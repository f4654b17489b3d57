// The step tuner (EngineOptions::tune_steps): times a backend's alternative ways of
// enqueueing the same decode step (Backend::step_switches) on the machine at hand and
// keeps the fastest whose logits are those of the backend as built.
//
// A decode step of one token after `context` cached ones (random ids) is run with each
// setting: the backend as built, then each switch alone at each of its other values.
// Each setting's logits (from the second of two calls: the CUDA backend's captured graph)
// are compared with the built one's first (a setting beyond the bound is reported and
// never timed). The settings are then timed in turn, a round at a
// time (`rounds` rounds of `steps` steps each, after two untimed steps: the CUDA backend
// captures its graph at the second), so that a drift of the clock or the card's state
// falls on all of them alike; a setting's time is its median over the rounds. Where
// switches gained alone, their values together are checked and timed again beside the
// built setting and the best one alone. A setting is chosen over the built one only when
// that is at least min_gain faster. The cache is left empty, and what the backend
// prepared for the settings (graphs) is dropped. The steps are one token each after the
// context, the argmax over the whole vocabulary taken with the logits, as the generator's
// greedy steps without drafts (its keys differ: the tokenizer's ids).
#pragma once

#include "backend.h"
#include "cetus/engine.h"

#include <functional>

namespace cetus {

struct TuneOptions {
    int64_t context = 256;  // cached tokens before the timed step (capped by the capacity)
    int rounds = 5;
    int steps = 8;
    double min_gain = 0.02;           // chosen over the built setting only when this much faster
    double max_logit_error = 1e-2;    // of the largest |logit| (the fast mode's sums differ far less)
    std::function<double()> clock;    // seconds; empty: std::chrono::steady_clock
};

// Throws what the backend throws; the switches are then back as built.
StepTuning tune_steps(Backend& backend, int64_t vocab_size, const TuneOptions& options = {});

}  // namespace cetus
