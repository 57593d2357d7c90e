/// What an allocation costs on a device, in NTX base units, with arithmetic that saturates instead of trapping.
/// The orchestrator prices offers with it and the device agent checks them with it, so both reckon alike.
public enum Cost {
    /// The device's hourly price for the allocation's resources (RAM billed per started MiB of a GB-hour).
    public static func hourly(cores: Int, ramMiB: Int, gpus: Int, prices: Prices) -> UInt64 {
        let cpu = multiply(prices.perCoreHour, UInt64(max(cores, 0)))
        let ramNumerator = multiply(prices.perGBRAMHour, UInt64(max(ramMiB, 0)))
        let ram = ramNumerator / 1024 + (ramNumerator % 1024 == 0 ? 0 : 1)
        let gpu = multiply(prices.perGPUHour, UInt64(max(gpus, 0)))
        return add(add(cpu, ram), gpu)
    }

    /// The price of one run: `seconds` at the hourly price (rounded up), and at least the device's minimum.
    /// Without a duration, the hourly price stands for the run.
    public static func job(hourly: UInt64, seconds: Int?, minimum: UInt64) -> UInt64 {
        guard let seconds else { return max(hourly, minimum) }
        let product = hourly.multipliedFullWidth(by: UInt64(max(seconds, 0)))
        if product.high == 0 {
            // The common case, without the full-width division (a division by a constant the compiler turns into a
            // multiplication); the same result.
            let (quotient, remainder) = product.low.quotientAndRemainder(dividingBy: 3600)
            return max(quotient + (remainder == 0 ? 0 : 1), minimum)
        }
        guard product.high < 3600 else { return .max }
        let (quotient, remainder) = UInt64(3600).dividingFullWidth(product)
        return max(add(quotient, remainder == 0 ? 0 : 1), minimum)
    }

    static func add(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? .max : sum
    }

    static func multiply(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (product, overflow) = a.multipliedReportingOverflow(by: b)
        return overflow ? .max : product
    }
}
