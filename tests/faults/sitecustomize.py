"""A fault injected at the engine boundary, for the tests that put this folder on PYTHONPATH (Python
imports `sitecustomize` at start-up, in the stage process and in every worker it spawns alike).

With SEQSWEEP_FAULT=<dataset>:<arch>, every engine call training that architecture raises right after
its first epoch was logged, as a lost device or an out-of-memory error after the first steps would.
Nothing else changes: the real stage, workers, engines and MLflow run as users run them."""

import importlib.abc
import importlib.util
import os
import sys

TARGET = os.environ.get("SEQSWEEP_FAULT")


class _InjectFault(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "seqsweep.engines":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            train = module.train

            def faulty(engine, program, arrays, *, on_epoch=None, **kwargs):
                if f"{program.dataset}:{program.arch}" != TARGET:
                    return train(engine, program, arrays, on_epoch=on_epoch, **kwargs)

                def crash_after_first_epoch(index, epoch, logs):
                    if on_epoch is not None:
                        on_epoch(index, epoch, logs)
                    raise RuntimeError("injected fault: the device was lost after the first epoch")

                return train(engine, program, arrays, on_epoch=crash_after_first_epoch, **kwargs)

            module.train = faulty

        spec.loader.exec_module = exec_module
        return spec


if TARGET:
    sys.meta_path.insert(0, _InjectFault())
