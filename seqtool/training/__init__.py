"""Training: the one Trainer (trainer.py; its checkpoint half checkpointing.py, its collectives
distributed.py), the one run around it (run.py), the tasks it trains (tasks.py), its optimizer and schedules
(optim.py) and runtime (devices, DDP, signals), and each job's config and task builder (lm, seq2seq,
transformer, finetune)."""
