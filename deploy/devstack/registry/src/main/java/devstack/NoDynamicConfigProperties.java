package devstack;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import java.util.List;
import javax.enterprise.context.ApplicationScoped;
import javax.enterprise.inject.Produces;

/**
 * Apicurio lists its runtime-editable properties with a build-time Quarkus extension whose
 * deployment half is not on Maven Central. The dev stack edits none of them at runtime, so the
 * list is empty.
 */
@ApplicationScoped
public class NoDynamicConfigProperties {
    @Produces
    @ApplicationScoped
    public DynamicConfigPropertyList dynamicConfigProperties() {
        return new DynamicConfigPropertyList(List.of());
    }
}
