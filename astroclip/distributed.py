"""Embedding a catalogue over many GPUs and nodes with Lightning's ``Trainer.predict``.

`embed_catalog_distributed` runs the chunks of `astroclip.embed_catalog` through
`lightning.pytorch.Trainer.predict`: Lightning starts (or joins) the processes
(``devices=8`` on one node; ``torchrun``; ``srun`` under SLURM, through its
cluster environments) and hands every process its share of the chunks (its
predict sampler never repeats an item).  `EmbeddingModule` wraps the model's
``encode_spectrum`` / ``encode_image``; `ChunkWriter` (a
`~lightning.pytorch.callbacks.BasePredictionWriter`) writes each finished chunk
atomically to ``<out>.parts/`` (the chunk files of `embed_catalog`, with the
same identity stamp, so an interrupted run resumes, also from the chunks of a
single-process run) and, at the end, one part file per rank.  Rank zero joins
the part files with `astroclip.data.embeddings.merge_embeddings`, which checks
that every rank used the same model, options and input and that every row is
there exactly once, in input order.

For clusters without a shared multi-GPU job, ``embed_catalog(..., shard=(i, n))``
(job arrays) does the same one shard per process.
"""

import contextlib
import json
from pathlib import Path

import torch

from ._io import atomic_path, check_output_path
from ._optional import require
from ._progress import progress_enabled
from .data.embeddings import embeddings_format, merge_embeddings, shard_meta
from .exceptions import InputError

__all__ = ["embed_catalog_distributed", "EmbeddingModule", "ChunkWriter"]

require("lightning", purpose="distributed embedding (Trainer.predict)")
import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.callbacks import BasePredictionWriter  # noqa: E402


class _ChunkIndices(torch.utils.data.Dataset):
    """The chunk indices ``0 .. n-1`` (each process reads and embeds its own chunks)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i


def _first(items):
    return items[0]


class EmbeddingModule(pl.LightningModule):
    """A `~lightning.pytorch.LightningModule` embedding one catalogue chunk per predict step.

    Parameters
    ----------
    model : `torch.nn.Module`
        A model with ``encode_<modality>`` methods (see `astroclip.load_model`).
    chunks : object
        The catalogue cut into chunks (as `astroclip.embed_catalog` cuts it).
    modalities : tuple of str
        ``("spectrum",)``, ``("image",)`` or both.
    stamp : `numpy.ndarray`
        The identity stamp written into every chunk file.
    batch_size : int
        Rows per forward pass.

    Examples
    --------
    >>> from astroclip.distributed import EmbeddingModule  # doctest: +SKIP
    """

    def __init__(self, model, chunks, modalities, stamp, *, batch_size):
        super().__init__()
        self.model = model.eval()
        self.chunks = chunks
        self.modalities = tuple(modalities)
        self.stamp = stamp
        self.batch_size = int(batch_size)
        self.done = set()

    def predict_step(self, batch, batch_idx=0, dataloader_idx=0):
        from . import api

        i = int(batch)
        if i in self.done:
            return {"index": i}
        encoders = {m: api._encoder(self.model, m) for m in self.modalities}
        result = api._embed_chunk(self.chunks, i, encoders, self.stamp,
                                  batch_size=self.batch_size, device=self.device)
        return {"index": i, "result": result}


class ChunkWriter(BasePredictionWriter):
    """Write each embedded chunk to ``<out>.parts/``, then one part file per rank.

    Rank zero prepares the parts folder (claims and locks it, writes the
    manifest, clears it when not resuming) before any rank embeds; chunk files
    already there, made the same way, are reused.  At the end each rank writes
    ``rank-<r>-of-<w>.h5``: an embeddings file of its chunks with the ``chunk``
    column and the shard metadata that `merge_embeddings` checks.

    Parameters
    ----------
    parts : path
        The parts folder.
    out : path
        The final output (for messages).
    made_by : dict
        Identity of the run (model, modalities, chunking, input, options).
    manifest : dict
        The manifest rank zero writes.
    resume : bool
        Reuse finished chunks.
    input_rows : int or None
        Rows of the catalogue when known.
    info : dict
        Metadata of the embeddings file (model name, weights sha256, modality).

    Examples
    --------
    >>> from astroclip.distributed import ChunkWriter  # doctest: +SKIP
    """

    def __init__(self, parts, out, made_by, manifest, *, resume, input_rows, info):
        super().__init__(write_interval="batch")
        self.parts, self.out = Path(parts), Path(out)
        self.made_by, self.manifest, self.resume = made_by, manifest, resume
        self.input_rows, self.info = input_rows, info
        self.written = []
        self.part_file = None
        self._stack = contextlib.ExitStack()

    def setup(self, trainer, pl_module, stage):
        from . import api

        if trainer.is_global_zero:
            api._claim_parts(self.parts)
            self._stack.enter_context(api._parts_lock(self.parts, self.out))
            if not self.resume:
                api._clear_parts(self.parts)
            api._resumable_chunks(self.parts, self.made_by, self.made_by["n_chunks"])
            if not (self.parts / "manifest.json").exists():
                with atomic_path(self.parts / "manifest.json") as tmp:
                    Path(tmp).write_text(json.dumps(self.manifest, indent=1))
        trainer.strategy.barrier("astroclip_parts_ready")
        pl_module.done = api._resumable_chunks(self.parts, self.made_by,
                                               self.made_by["n_chunks"])

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch,
                           batch_idx, dataloader_idx=0):
        from . import api

        if "result" in prediction:
            api._save_chunk(self.parts, prediction["index"], prediction["result"])
        self.written.append(int(prediction["index"]))

    def on_predict_end(self, trainer, pl_module):
        from . import api

        rank, world = trainer.global_rank, trainer.world_size
        comparable = api._comparable(self.made_by)
        self.part_file = self.parts / f"rank-{rank:05d}-of-{world:05d}.h5"
        api._write_output(self.parts, self.part_file, "hdf5", pl_module.modalities, self.info,
                          sorted(self.written),
                          shard=shard_meta(comparable, (rank, world), input_rows=self.input_rows))

    def teardown(self, trainer, pl_module, stage):
        self._stack.close()


def embed_catalog_distributed(source, *, out, modality="both", model=None, chunk_size=4096,
                              format=None, batch_size=None, progress=None, overwrite=False,
                              resume=True, device=None, accelerator="auto", devices="auto",
                              num_nodes=1, strategy="auto", precision="32-true",
                              **prepare_kwargs):
    """Embed a catalogue into a file with Lightning's ``Trainer.predict`` (GPUs, nodes).

    The same work and output as `astroclip.embed_catalog` (same chunks, same
    rows in the same order, same file), spread over the processes that
    Lightning runs: ``devices=8`` on one node, ``torchrun --nproc-per-node 8``,
    or ``srun`` under SLURM with ``num_nodes``.  Call it in every process
    (Lightning's launcher starts them for ``devices=N`` on one node).  Each
    process embeds its share of the chunks and writes them to ``<out>.parts/``
    (resumable, the identity checks of `embed_catalog`), then a part file of
    its own; rank zero merges the parts with
    `astroclip.data.embeddings.merge_embeddings` (every rank made by the same
    model, options and input; every row exactly once) and removes them.

    Parameters
    ----------
    source, out, modality, model, chunk_size, format, batch_size, progress, overwrite, resume
        As in `astroclip.embed_catalog`.
    device : str, optional
        One device (``"cpu"``, ``"cuda:1"``); overrides ``accelerator`` and ``devices``.
    accelerator, devices, num_nodes, strategy : optional
        `lightning.pytorch.Trainer` settings (``strategy="ddp"`` for several
        devices; Lightning's cluster environments read torchrun's and SLURM's
        variables).
    precision : str, optional
        Lightning precision; the default ``"32-true"`` gives the embeddings of
        `embed_catalog`; ``"bf16-mixed"`` is faster on recent GPUs.
    **prepare_kwargs
        Passed to the input layer.

    Returns
    -------
    `pathlib.Path`
        ``out`` (in every process).

    Raises
    ------
    InputError, ResumeMismatchError, DataFileError, NonFiniteError
        As in `astroclip.embed_catalog`.
    MergeError
        The part files of the ranks do not make up the catalogue (a bug or a
        changed input; nothing is lost: run again, it resumes).

    Examples
    --------
    Eight GPUs of one node (or ``torchrun --nproc-per-node 8 script.py``):

    >>> from astroclip.distributed import embed_catalog_distributed
    >>> embed_catalog_distributed("dr1/healpix/", out="dr1.h5", modality="spectrum",
    ...                           accelerator="gpu", devices=8,
    ...                           strategy="ddp")  # doctest: +SKIP
    """
    from . import api
    from .training.trainer import _trainer, lightning_quiet, resolve_accelerator

    if modality not in api._MODALITIES:
        raise InputError(f"unknown modality {modality!r}; choose among {sorted(api._MODALITIES)}")
    modalities = api._MODALITIES[modality]
    out = Path(out)
    fmt = embeddings_format(out, format)
    check_output_path(out, overwrite=overwrite)
    if int(chunk_size) < 1:
        raise InputError(f"chunk_size must be a positive integer, got {chunk_size}")
    _, batch_size, progress = api._options("cpu", batch_size, progress)
    accelerator, devices = resolve_accelerator(device, accelerator, devices)
    net = api._shared_model(model, device="cpu")
    chunks = api._Chunks(source, modalities, int(chunk_size), prepare_kwargs)
    info = {**api.model_info(net), "modality": modality}
    made_by = api._run_identity(net, info, chunks, modalities, chunk_size, prepare_kwargs)
    parts = out.with_name(out.name + ".parts")
    if resume and parts.is_dir():
        # read-only, in every process: a refused resume stops all ranks alike
        api._resumable_chunks(parts, made_by, len(chunks))
    manifest = {"format": api._PARTS_FORMAT, "format_version": 1, "model_info": info,
                "source": [str(d) for d in chunks.description], "made_by": made_by}
    module = EmbeddingModule(net, chunks, modalities, api._chunk_stamp(made_by),
                             batch_size=batch_size)
    writer = ChunkWriter(parts, out, made_by, manifest, resume=resume, input_rows=chunks.rows,
                         info=info)
    loader = torch.utils.data.DataLoader(_ChunkIndices(len(chunks)), batch_size=1,
                                         shuffle=False, collate_fn=_first)
    with lightning_quiet():
        trainer = _trainer(accelerator=accelerator, devices=devices, num_nodes=num_nodes,
                           strategy=strategy, precision=precision, logger=False,
                           enable_checkpointing=False, enable_model_summary=False,
                           enable_progress_bar=progress_enabled(progress),
                           callbacks=[writer])
        trainer.predict(module, dataloaders=loader, return_predictions=False)
    trainer.strategy.barrier("astroclip_parts_written")
    if trainer.is_global_zero:
        world = trainer.world_size
        part_files = [parts / f"rank-{r:05d}-of-{world:05d}.h5" for r in range(world)]
        check_output_path(out, overwrite=overwrite)
        merge_embeddings(part_files, out, format=fmt, overwrite=overwrite)
        if "spectrum" in modalities:
            valid = api._chunk_column(parts, len(chunks), "valid")
            problem = api._chunk_column(parts, len(chunks), "problem")
            api._warn_unusable(valid, problem, len(valid), f"rows of {chunks.description[0]}",
                               f"They are kept, flagged valid = False in {out} (column problem "
                               "says why): select the rows with valid == True.")
        for p in part_files:
            p.unlink()
        with api._parts_lock(parts, out):
            api._remove_parts(parts)
    trainer.strategy.barrier("astroclip_merged")
    return out
