"""sae-agent: an autonomous, git-recorded experiment loop for sparse-autoencoder research."""

__version__ = "0.1.0"
