"""uninlu Pulumi components and the Helm chart they release."""
