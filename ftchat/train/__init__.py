"""Training: `run.run_training` trains one RunConfig into its run folder; one module per method (sft, dpo, kto,
reward, grpo, rloo) builds its TRL trainer; plan chooses steps from the data, preflight finds problems before a run,
form turns a form into a RunConfig, replay, rewards, reward_model and compare serve the methods and the results."""
