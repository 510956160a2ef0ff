"""The registry client: what a registry itself says about a pushed image.

- :mod:`.references`: which event values can name an image (the reference grammar);
- :mod:`.outcomes`: the bounded set of outcomes and :class:`~.outcomes.LookupResult`;
- :mod:`.credentials`: credentials from a pull Secret, and a 401's challenge;
- :mod:`.guard`: which addresses may be connected (redirects, realms, rebinding);
- :mod:`.documents`: reading manifests, configs and bodies, within limits;
- :mod:`.cache`: facts by digest;
- :mod:`.session`: one lookup's requests (OCI Distribution, with treq);
- :mod:`.client`: :class:`~.client.RegistryClient`, on the reactor;
- :mod:`.bridge`: :class:`~.bridge.LookupBridge`, the blocking side a pool thread calls.
"""
