"""Training: the one Trainer (trainer.py), its schedules and runtime (devices, DDP, signals), and each
model family's config and TrainTask builder (lm, seq2seq, transformer, finetune)."""
