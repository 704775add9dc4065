"""Orchestrator: decides when to fine-tune and runs the training workflow."""
