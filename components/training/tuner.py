"""Tuner's ``tuner_fn``: a seeded random search over how the seed's network trains.

KerasTuner's own tuners build Keras 3 models and reject this project's ``tf_keras`` ones, so this is
a tuner of our own on KerasTuner's ``BaseTuner``: each trial trains with model.py's ``fit`` (the
Trainer's own code) on the ``train`` split and validates on the held-out ``eval`` split, never on
``test``. The architecture and normalize(axis=1) stay the seed's; the search covers
hparams.TUNABLE, with epochs found by early stopping: a trial's tuned epoch count is the epoch at
which its val_accuracy peaked. TFX's Tuner executor writes the best trial's values
(best_hyperparameters.txt), which the Trainer takes (model.run_fn, hparams.resolve).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Dict, List

import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from keras_tuner.engine import base_tuner
from keras_tuner.engine import trial as trial_module
from keras_tuner.oracles import RandomSearchOracle
from tfx import v1 as tfx

from components.training import model as model_lib
from components.training.hparams import EXPLICIT_KEY, NETWORK_KEY, TRIALS_KEY, HParams, network
from pipeline.runs import console

PATIENCE = 2  # epochs without a better val_accuracy before a trial stops
OBJECTIVE = "val_accuracy"
# The values each trial may draw from; the config's own value is added to its list (and tried first).
SPACE: Dict[str, List[Any]] = {
    "learning_rate": [0.001, 0.002, 0.003, 0.005, 0.01],
    "lr_schedule": ["cosine", "constant"],
    "batch_size": [64, 128, 256],
    "augment_shift": [0, 1, 2],
}


def search_space(start: HParams, fixed=()) -> keras_tuner.HyperParameters:
    """SPACE with ``start``'s values as defaults, less the ``fixed`` fields (set explicitly by the
    user, so a tuned value would not be used), and epochs fixed at ``start.epochs``: the most a
    trial trains, early stopping deciding the count. The network is recorded as a fixed value, so the
    Trainer reuses the result only for the network it was tuned for."""
    space = keras_tuner.HyperParameters()
    for name, values in SPACE.items():
        if name not in fixed:
            default = getattr(start, name)
            space.Choice(name, sorted(set(values) | {default}), default=default)
    space.Fixed("epochs", start.epochs)
    space.Fixed(NETWORK_KEY, network(start))
    return space


class _StartFirst(RandomSearchOracle):
    """Random search whose first trial is the config's values, so tuning cannot end below them."""

    def populate_space(self, trial_id):
        if not self.trials:
            return {"status": trial_module.TrialStatus.RUNNING,
                    "values": {hp.name: hp.default for hp in self.hyperparameters.space}}
        return super().populate_space(trial_id)


class DigitsTuner(base_tuner.BaseTuner):
    """Trains each trial's values with model.py's fit; the trained models are not kept (the Trainer trains
    the final one on its own splits), so save_model keeps nothing and load_model refuses."""

    def __init__(self, start: HParams, max_trials: int, fixed=(), **kwargs):
        super().__init__(
            oracle=_StartFirst(objective=keras_tuner.Objective(OBJECTIVE, "max"), max_trials=max_trials,
                               seed=start.seed, hyperparameters=search_space(start, fixed),
                               allow_new_entries=False, tune_new_entries=False),
            **kwargs)
        self._start = start
        self._done = 0

    def run_trial(self, trial, train_examples, eval_examples):
        values = trial.hyperparameters.values
        hparams = HParams.from_custom_config({**dataclasses.asdict(self._start), **values})
        began = time.monotonic()
        tf.keras.backend.clear_session()  # the previous trial's model is not needed any more
        try:
            _, history = model_lib.fit(hparams, train_examples, eval_examples, callbacks=[
                tf.keras.callbacks.EarlyStopping(monitor=OBJECTIVE, mode="max", patience=PATIENCE)])
        except Exception as error:  # KerasTuner would count it a failed trial and go on: it is a bug here
            raise keras_tuner.errors.FatalError(f"Tuner trial {trial.trial_id} failed: {error!r}") from error
        scores = history.history[OBJECTIVE]
        best = max(range(len(scores)), key=lambda epoch: (scores[epoch], -epoch))  # the first peak
        values["epochs"] = best + 1  # what the Trainer takes: train as long as the peak took
        self._done += 1
        shown = ", ".join(f"{name} {values[name]}" for name in SPACE if name in values)
        line = (f"  Tuner trial {self._done}/{self.oracle.max_trials}: {shown or 'config values'} -> "
                f"{OBJECTIVE} {scores[best]:.4f} at epoch {best + 1}/{hparams.epochs} "
                f"({time.monotonic() - began:.1f} s)")
        logging.info(line.strip())
        console.show(line)
        return {OBJECTIVE: float(scores[best])}

    def save_model(self, trial_id, model, step=0):
        """Nothing to keep: the Trainer retrains with the best values."""

    def load_model(self, trial):
        raise NotImplementedError("the digits Tuner keeps no trial models; the Trainer trains the model "
                                  "with the best hyper-parameters")


def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
    """The tuner and its data, for TFX's Tuner executor: train_files must be the train split and
    eval_files the eval split (the pipeline's train_args and eval_args); the test split never."""
    for files in (fn_args.train_files, fn_args.eval_files):
        if any("Split-test" in pattern for pattern in files):
            raise ValueError(f"the Tuner never reads the test split, got {files}; tune on train with eval held out")
    if set(fn_args.train_files) & set(fn_args.eval_files):
        raise ValueError("the Tuner needs eval held out of its training splits (train_args ['train'], "
                         "eval_args ['eval'])")
    config = fn_args.custom_config or {}
    start = HParams.from_custom_config(config)
    trials = int(config[TRIALS_KEY])  # the pipeline passes --tune-trials
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    tuner = DigitsTuner(start, max_trials=trials, fixed=tuple(config.get(EXPLICIT_KEY) or ()),
                        directory=fn_args.working_dir, project_name="digits_tuning", overwrite=True)
    console.show(f"  Tuner: {trials} trial{'s' if trials != 1 else ''} of at most {start.epochs} epochs on the "
                 f"train split, eval held out")
    return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={
        "train_examples": model_lib.transformed_examples(fn_args, fn_args.train_files, tf_transform_output),
        "eval_examples": model_lib.transformed_examples(fn_args, fn_args.eval_files, tf_transform_output),
    })
